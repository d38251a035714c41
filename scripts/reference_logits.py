#!/usr/bin/env python3
"""Writes MODEL_DIR/reference.safetensors with transformers' outputs for a checkpoint directory, so
tests/test_parity.cpp can compare kvforge against the reference implementation.

Usage: python3 scripts/reference_logits.py MODEL_DIR [MODEL_DIR ...]   (where transformers is installed)
Tensors: input_ids [2, 24], logits (fp32), prompt_a/prompt_b and their 16-token greedy continuations
greedy_a/greedy_b, and logits_bf16_cuda when a GPU is present.
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

SEQ = 24
NEW_TOKENS = 16


def greedy(model, ids):
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, do_sample=False,
                         eos_token_id=None, pad_token_id=0, min_new_tokens=NEW_TOKENS)
    return out[:, ids.shape[1]:]


def write_reference(model_dir, model=None, low=3):
    """`model`: an fp32 model already in memory (else loaded from model_dir); ids are drawn from [low, vocab)."""
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(42)
    input_ids = torch.randint(low, vocab, (2, SEQ), generator=g)
    prompt_a = torch.randint(low, vocab, (1, 5), generator=g)
    prompt_b = torch.randint(low, vocab, (1, 11), generator=g)
    with torch.no_grad():
        ref = {"input_ids": input_ids, "logits": model(input_ids).logits.float().contiguous(),
               "prompt_a": prompt_a, "prompt_b": prompt_b,
               "greedy_a": greedy(model, prompt_a), "greedy_b": greedy(model, prompt_b)}
        if torch.cuda.is_available():
            m16 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16,
                                                       attn_implementation="eager").cuda().eval()
            ref["logits_bf16_cuda"] = m16(input_ids.cuda()).logits.float().cpu().contiguous()
    save_file(ref, os.path.join(model_dir, "reference.safetensors"))
    return ref


if __name__ == "__main__":
    for directory in sys.argv[1:]:
        ref = write_reference(directory)
        print(directory, "greedy_a", ref["greedy_a"].tolist(), "logits std", ref["logits"].std().item())
