#pragma once
// The artifact format: what a method trainer exports and a policy reads. One .safetensors file (readable by
// the Python `safetensors` library too) whose __metadata__ holds the method, the format version, the
// fingerprint of the base model it was made for, the recipe text and the headline metrics at export.
// Loading it against another model is an InputError naming the field that differs.
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>

#include "runtime/model_config.h"

namespace kvforge {

constexpr int64_t kArtifactFormatVersion = 1;

// The architecture an artifact's shapes depend on, plus a hash of the canonical config (weights are not
// hashed: a fine-tune of the same architecture is accepted).
struct ModelFingerprint {
  std::string model_type;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t hidden_size = 0;
  int64_t vocab_size = 0;
  std::string config_hash;  // FNV-1a 64 of the canonical config.json kvforge would write, hex

  static ModelFingerprint of(const ModelConfig& config);
};

struct Artifact {
  std::string path;  // where it was read from (for errors)
  std::string method;
  ModelFingerprint model;
  std::string recipe;                         // the resolved recipe text
  std::map<std::string, double> metrics;      // headline numbers at export
  // Structured settings a method needs beside its tensors (KV Prediction: the auxiliary model's config.json);
  // optional, stored as one JSON object of strings.
  std::map<std::string, std::string> attributes;
  std::map<std::string, at::Tensor> tensors;  // CPU tensors
};

// Atomic (temp file, then rename): an interrupted export never leaves a half-written artifact.
void write_artifact(const std::string& path, const Artifact& artifact);

// Validates the metadata (every field present and well-formed, a known format version) and loads the tensors.
Artifact read_artifact(const std::string& path);

// InputError naming the artifact, the first fingerprint field that differs and both values.
void check_artifact_matches(const Artifact& artifact, const ModelConfig& config, const std::string& model_dir);

}  // namespace kvforge
