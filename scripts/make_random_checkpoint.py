#!/usr/bin/env python3
"""Writes a random-weight Hugging Face checkpoint of a real model's shape, for speed and memory runs (speed and
memory do not depend on the weights' values; no pretrained weights can be fetched here).

Usage: python3 scripts/make_random_checkpoint.py OUT_DIR [--shape llama-3.1-8b|qwen3-8b] [--tokenizer FILE.json] [--config-only]
Writes OUT_DIR/config.json, sharded bf16 safetensors with their index, and tokenizer.json (copied from --tokenizer,
by default the built-in byte tokenizer of models/tiny-base: its ids are valid in any larger vocabulary). Weights are
drawn on the GPU when there is one: N(0, 0.02) matrices, unit norms. --config-only writes config.json alone, for
`kvforge bench generate --config`, which draws the weights on the GPU itself.
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file

SHAPES = {
    # meta-llama/Llama-3.1-8B's config.json, as published.
    "llama-3.1-8b": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=128256, hidden_size=4096,
        intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        max_position_embeddings=131072, rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=False,
        rope_theta=500000.0, rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                               high_freq_factor=4.0, original_max_position_embeddings=8192),
        bos_token_id=128000, eos_token_id=128001, torch_dtype="bfloat16"),
    # Qwen/Qwen3-8B's config.json, as published (per-head q_norm/k_norm, no sliding layers in use).
    "qwen3-8b": dict(
        architectures=["Qwen3ForCausalLM"], model_type="qwen3", vocab_size=151936, hidden_size=4096,
        intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        max_position_embeddings=40960, rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=False,
        attention_bias=False, rope_theta=1000000.0, use_sliding_window=False, sliding_window=None,
        max_window_layers=36, bos_token_id=151643, eos_token_id=151645, torch_dtype="bfloat16"),
}

SHARD_BYTES = 4 << 30


def tensor_shapes(config):
    hidden, inner, kv = config["hidden_size"], config["intermediate_size"], config["num_key_value_heads"]
    head_dim = config["head_dim"]
    shapes = {"model.embed_tokens.weight": (config["vocab_size"], hidden), "model.norm.weight": (hidden,)}
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (config["vocab_size"], hidden)
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        shapes.update({
            prefix + "input_layernorm.weight": (hidden,),
            prefix + "post_attention_layernorm.weight": (hidden,),
            prefix + "self_attn.q_proj.weight": (config["num_attention_heads"] * head_dim, hidden),
            prefix + "self_attn.k_proj.weight": (kv * head_dim, hidden),
            prefix + "self_attn.v_proj.weight": (kv * head_dim, hidden),
            prefix + "self_attn.o_proj.weight": (hidden, config["num_attention_heads"] * head_dim),
            prefix + "mlp.gate_proj.weight": (inner, hidden),
            prefix + "mlp.up_proj.weight": (inner, hidden),
            prefix + "mlp.down_proj.weight": (hidden, inner),
        })
        if config["model_type"] == "qwen3":
            shapes[prefix + "self_attn.q_norm.weight"] = (head_dim,)
            shapes[prefix + "self_attn.k_norm.weight"] = (head_dim,)
    return shapes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--shape", default="llama-3.1-8b", choices=sorted(SHAPES))
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--tokenizer", default=os.path.join(here, "..", "models", "tiny-base", "tokenizer.json"))
    parser.add_argument("--config-only", action="store_true")
    args = parser.parse_args()
    config = SHAPES[args.shape]
    os.makedirs(args.out, exist_ok=True)
    if args.config_only:
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator(device=device).manual_seed(0)
    shards, shard, shard_bytes = [], {}, 0
    for name, shape in tensor_shapes(config).items():
        if len(shape) == 1:
            tensor = torch.ones(shape, dtype=torch.bfloat16)
        else:
            tensor = (torch.randn(shape, generator=generator, device=device, dtype=torch.float32) * 0.02)
            tensor = tensor.to(torch.bfloat16).cpu()
        if shard and shard_bytes + tensor.numel() * 2 > SHARD_BYTES:
            shards.append(shard)
            shard, shard_bytes = {}, 0
        shard[name] = tensor
        shard_bytes += tensor.numel() * 2
    shards.append(shard)
    weight_map, total = {}, 0
    for index, tensors in enumerate(shards):
        file = f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, os.path.join(args.out, file), metadata={"format": "pt"})
        for name, tensor in tensors.items():
            weight_map[name] = file
            total += tensor.numel() * 2
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    shutil.copy(args.tokenizer, os.path.join(args.out, "tokenizer.json"))
    print(f"{args.out}: {args.shape}, {total / 2**30:.2f} GiB of bf16 weights in {len(shards)} shards")


if __name__ == "__main__":
    main()
