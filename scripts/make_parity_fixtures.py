#!/usr/bin/env python3
"""Writes the parity fixtures under tests/fixtures/ (run on the GPU machine, which has transformers).

Usage: python3 scripts/make_parity_fixtures.py OUT_DIR [NAME ...]
Writes OUT_DIR/fixtures.tar.gz holding (only the named fixtures when NAMEs are given):
  llama/, llama-sharded/, qwen2/, qwen3/, mistral/   tiny random checkpoints (save_pretrained)
  <model>/reference.safetensors             input ids, fp32 logits, greedy continuations, bf16 CUDA logits
                                            (scripts/reference_logits.py writes the same for any checkpoint)
  tokenizer-gpt2/, tokenizer-llama3/        byte-level BPE tokenizer.json trained with `tokenizers`
  <tokenizer>/encodings.json                 [{"text", "ids", "decoded"}] for a few hundred strings
Every weight (norms and biases too) is drawn at random, so a wrong bias, norm or RoPE changes the logits.
The SentencePiece-style tokenizer fixtures (tokenizer-llama2/, tokenizer-mistral/) come from
scripts/make_tokenizer_fixtures.py instead, which needs only `tokenizers`; test_strings() lives there.
"""
import json
import os
import sys
import tarfile
import tempfile

import torch
from make_tokenizer_fixtures import test_strings
from reference_logits import write_reference
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

VOCAB = 512

COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=512, rms_norm_eps=1e-5,
              bos_token_id=1, eos_token_id=2, pad_token_id=0, attn_implementation="eager")

MODELS = {
    # llama3 RoPE scaling with a short original context so several frequency bands are rescaled.
    "llama": (LlamaConfig, LlamaForCausalLM, dict(
        num_key_value_heads=2, tie_word_embeddings=False,
        rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=64))),
    # q/k/v biases, tied embeddings, one KV head, linear RoPE scaling.
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(
        num_key_value_heads=1, tie_word_embeddings=True, use_sliding_window=False,
        rope_parameters=dict(rope_type="linear", rope_theta=1000000.0, factor=2.0))),
    # per-head q_norm/k_norm (random weights, so a skipped norm changes the logits), biases on q/k/v/o that the norm
    # sees, explicit head_dim != hidden/heads, and layer 1 of 2 under a sliding window
    # (use_sliding_window + max_window_layers, which transformers writes out as layer_types).
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, dict(
        num_key_value_heads=2, head_dim=32, attention_bias=True, tie_word_embeddings=False,
        use_sliding_window=True, sliding_window=8, max_window_layers=1,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0))),
    # explicit head_dim != hidden/heads and a sliding window shorter than the sequence.
    "mistral": (MistralConfig, MistralForCausalLM, dict(
        num_key_value_heads=2, head_dim=32, sliding_window=8, tie_word_embeddings=False,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0))),
}


def randomize(model):
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5))


def make_model(root, name):
    cfg_cls, model_cls, extra = MODELS[name]
    torch.manual_seed(0)
    cfg = cfg_cls(**COMMON, **extra)
    model = model_cls(cfg).float().eval()
    randomize(model)
    model.save_pretrained(os.path.join(root, name))
    ref = write_reference(os.path.join(root, name), model)
    if name == "llama":
        model.save_pretrained(os.path.join(root, "llama-sharded"), max_shard_size="200KB")
        write_reference(os.path.join(root, "llama-sharded"), model)
    print(name, "config:", open(os.path.join(root, name, "config.json")).read())
    print(name, "greedy_a", ref["greedy_a"].tolist(), "logits std", ref["logits"].std().item())


LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def corpus():
    import transformers
    root = os.path.dirname(transformers.__file__)
    texts = []
    for sub in ["models/llama", "models/qwen2", "generation", "utils"]:
        d = os.path.join(root, sub)
        for f in sorted(os.listdir(d)):
            if f.endswith(".py"):
                texts.append(open(os.path.join(d, f), encoding="utf-8").read())
    texts += ["Ünïcödé façade naïve café 東京 中文字符 Привет мир 😀🚀 ﬁ ½ Ελληνικά العربية"] * 50
    return texts


def make_tokenizer(root, name):
    tok = Tokenizer(models.BPE(ignore_merges=(name == "tokenizer-llama3")))
    if name == "tokenizer-gpt2":
        specials = ["<|endoftext|>", "<|pad|>"]
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        specials = ["<|begin_of_text|>", "<|endoftext|>", "<|pad|>"]
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    if name == "tokenizer-llama3":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                           special_tokens=[("<|begin_of_text|>", bos)])
    os.makedirs(os.path.join(root, name))
    tok.save(os.path.join(root, name, "tokenizer.json"))
    enc = []
    for s in test_strings():
        ids = tok.encode(s).ids
        enc.append({"text": s, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    json.dump(enc, open(os.path.join(root, name, "encodings.json"), "w"), ensure_ascii=False, indent=0)
    print(name, "vocab", tok.get_vocab_size(), "example", enc[4])


def make_byte_tokenizer(directory):
    """One token per byte (the built-in tiny model's scheme) so generation demos run on a fixture."""
    alphabet = {}
    for byte in range(256):
        alphabet[bytes_to_unicode()[byte]] = byte
    tok = Tokenizer(models.BPE(vocab=alphabet, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(os.path.join(directory, "tokenizer.json"))


def bytes_to_unicode():
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def main():
    out, only = sys.argv[1], set(sys.argv[2:])
    wanted = lambda name: not only or name in only
    with tempfile.TemporaryDirectory() as root:
        for name in MODELS:
            if wanted(name):
                make_model(root, name)
        for name in ["llama", "qwen3"]:  # so generate, eval and the trainers run on these checkpoints
            if wanted(name):
                make_byte_tokenizer(os.path.join(root, name))
        for name in ["tokenizer-gpt2", "tokenizer-llama3"]:
            if wanted(name):
                make_tokenizer(root, name)
        with tarfile.open(os.path.join(out, "fixtures.tar.gz"), "w:gz") as tar:
            for entry in sorted(os.listdir(root)):
                tar.add(os.path.join(root, entry), arcname=entry)
    print("versions: torch", torch.__version__, "transformers", __import__("transformers").__version__,
          "tokenizers", __import__("tokenizers").__version__)


if __name__ == "__main__":
    main()
