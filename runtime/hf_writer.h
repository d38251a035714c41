#pragma once
// Writing a model as a Hugging Face checkpoint directory: config.json, model.safetensors (or shards
// plus model.safetensors.index.json), tokenizer.json and generation_config.json. The directory is
// assembled under <dir>.tmp and renamed into place, so readers never see half of it.
#include <ATen/ATen.h>
#include <string>

#include "runtime/transformer.h"

namespace kvforge {

struct HfWriteOptions {
  at::ScalarType dtype = at::kFloat;       // stored dtype (F32 or BF16)
  int64_t max_shard_bytes = 0;             // 0 = one file; else shards no larger than this (one tensor per shard at least)
  std::string tokenizer_json;              // written verbatim when non-empty
};

void write_hf_checkpoint(const std::string& dir, const Transformer& model, const HfWriteOptions& options);

}  // namespace kvforge
