#!/usr/bin/env python3
"""Hugging Face transformers' generation on the same shapes as `kvforge bench generate`, for its side-by-side rows.

Builds the model from the same config.json with random bf16 weights drawn on the GPU (SDPA attention), then per
batch and prompt length times greedy generate() with its default dynamic cache. The static cache is not used: in
transformers 5 it compiles the forward with torch.compile inside generate() (measured on the H200: 1.2 s per output
token at 1 x 32k, the compile time, and a recompile per shape), which a run of a few shapes cannot amortise:
time to first token = generate(max_new_tokens=1), time per output token = (generate(N) - generate(1)) / (N - 1).
Peak allocated and reserved memory are torch's over the N-token run. Writes JSON in the shape of kvforge's cells.

Usage: python3 bench/hf_generate.py CONFIG.json --batch 1,16 --lengths 32768 --new-tokens 32 --out FILE.json
"""
import argparse
import json
import time

import torch
import transformers


def timed_generate(model, ids, new_tokens, cache):
    torch.cuda.synchronize()
    start = time.perf_counter()
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                   do_sample=False, cache_implementation=None if cache == "dynamic" else cache, pad_token_id=0)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--batch", default="1,16")
    parser.add_argument("--lengths", default="32768")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--cache", default="dynamic", help="transformers cache_implementation (dynamic = its default)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    config = transformers.AutoConfig.from_pretrained(args.config)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16,
                                                              attn_implementation="sdpa")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.fill_(1.0) if "norm" in name else parameter.normal_(0.0, 0.02)
    model.eval()
    report = {"runtime": f"transformers {transformers.__version__}, torch {torch.__version__}",
              "device": torch.cuda.get_device_name(), "attention": "sdpa", "cache_implementation": args.cache,
              "torch_compile": False, "new_tokens": args.new_tokens, "cells": []}
    warm = torch.randint(0, config.vocab_size, (1, 256), device="cuda")
    timed_generate(model, warm, 4, args.cache)
    for length in [int(x) for x in args.lengths.split(",")]:
        for batch in [int(x) for x in args.batch.split(",")]:
            cell = {"policy": "transformers", "batch": batch, "prompt_tokens": length}
            try:
                ids = torch.randint(0, config.vocab_size, (batch, length), device="cuda")
                first = timed_generate(model, ids, 1, args.cache)
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                whole = timed_generate(model, ids, args.new_tokens, args.cache)
                tpot = (whole - first) / (args.new_tokens - 1)
                cell.update(ttft_ms=first * 1e3, tpot_ms=tpot * 1e3, decode_tokens_per_s=batch / tpot,
                            peak_allocated_bytes=torch.cuda.max_memory_allocated(),
                            peak_reserved_bytes=torch.cuda.max_memory_reserved())
            except torch.OutOfMemoryError as error:
                cell["error"] = "out of memory: " + str(error).splitlines()[0]
            torch.cuda.empty_cache()
            print(json.dumps(cell), flush=True)
            report["cells"].append(cell)
            with open(args.out, "w") as out:
                json.dump(report, out, indent=1)


if __name__ == "__main__":
    main()
