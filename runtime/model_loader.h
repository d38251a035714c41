#pragma once
// Loading a Hugging Face checkpoint directory (config.json, safetensors, optional tokenizer.json and
// generation_config.json) into a Transformer on a chosen device and dtype.
#include <optional>
#include <string>

#include "runtime/model_config.h"
#include "runtime/safetensors.h"
#include "runtime/tokenizer.h"
#include "runtime/transformer.h"

namespace kvforge {

struct LoadedModel {
  std::string dir;
  ModelConfig config;
  Transformer model{nullptr};
  std::optional<Tokenizer> tokenizer;   // when the directory has tokenizer.json
  std::vector<int64_t> eos_token_ids;   // generation_config.json's, else config.json's
};

// `dtype`: at::kFloat or at::kBFloat16 (or at::kHalf). Any missing, unexpected or misshapen tensor is
// an InputError naming the file and tensor.
LoadedModel load_model(const std::string& dir, const at::Device& device, at::ScalarType dtype);

// Copies every parameter of `model` from `tensors`, checking names and shapes against the config.
void load_weights(Transformer& model, const CheckpointTensors& tensors);

// "float32" | "fp32" | "bfloat16" | "bf16" | "float16" | "fp16"; anything else is an InputError.
at::ScalarType parse_dtype_name(const std::string& name, const std::string& source, const std::string& field);

}  // namespace kvforge
