#include "checkpoints/artifact.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "runtime/input_error.h"
#include "runtime/tensor_io.h"

namespace kvforge {
namespace {

constexpr const char* kPrefix = "kvforge.";

std::string fnv1a_hex(const std::string& text) {
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(hash));
  return hex;
}

// Fingerprint fields in metadata order, as (key, text) pairs.
std::vector<std::pair<std::string, std::string>> fingerprint_fields(const ModelFingerprint& model) {
  return {{"model.type", model.model_type},
          {"model.layers", std::to_string(model.num_layers)},
          {"model.heads", std::to_string(model.num_heads)},
          {"model.kv_heads", std::to_string(model.num_kv_heads)},
          {"model.head_dim", std::to_string(model.head_dim)},
          {"model.hidden_size", std::to_string(model.hidden_size)},
          {"model.vocab_size", std::to_string(model.vocab_size)},
          {"model.config_hash", model.config_hash}};
}

int64_t parse_count(const std::string& path, const std::string& key, const std::string& text) {
  try {
    size_t used = 0;
    const int64_t value = std::stoll(text, &used);
    if (used == text.size() && value > 0) return value;
  } catch (const std::exception&) {
  }
  fail_input(path, "__metadata__." + key, "expected a positive integer, got '" + text + "'");
}

}  // namespace

ModelFingerprint ModelFingerprint::of(const ModelConfig& config) {
  ModelFingerprint model;
  model.model_type = config.model_type;
  model.num_layers = config.num_layers;
  model.num_heads = config.num_heads;
  model.num_kv_heads = config.num_kv_heads;
  model.head_dim = config.head_dim;
  model.hidden_size = config.hidden_size;
  model.vocab_size = config.vocab_size;
  model.config_hash = fnv1a_hex(to_json(config).dump());
  return model;
}

void write_artifact(const std::string& path, const Artifact& artifact) {
  std::map<std::string, std::string> metadata;
  metadata[std::string(kPrefix) + "method"] = artifact.method;
  metadata[std::string(kPrefix) + "format_version"] = std::to_string(kArtifactFormatVersion);
  for (const auto& [key, text] : fingerprint_fields(artifact.model)) metadata[kPrefix + key] = text;
  metadata[std::string(kPrefix) + "recipe"] = artifact.recipe;
  metadata[std::string(kPrefix) + "metrics"] = nlohmann::json(artifact.metrics).dump();
  if (!artifact.attributes.empty())
    metadata[std::string(kPrefix) + "attributes"] = nlohmann::json(artifact.attributes).dump();
  std::vector<std::pair<std::string, at::Tensor>> tensors(artifact.tensors.begin(), artifact.tensors.end());
  save_tensors(path, tensors, metadata);
}

Artifact read_artifact(const std::string& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  const std::map<std::string, std::string>& metadata = file.metadata();
  auto field = [&](const std::string& key) -> const std::string& {
    auto found = metadata.find(kPrefix + key);
    if (found == metadata.end())
      fail_input(path, "__metadata__." + std::string(kPrefix) + key,
                 "missing: not a kvforge artifact (or written by a version without this field)");
    return found->second;
  };
  Artifact artifact;
  artifact.path = path;
  const std::string& version = field("format_version");
  if (version != std::to_string(kArtifactFormatVersion))
    fail_input(
        path, "__metadata__.kvforge.format_version",
        "this kvforge reads version " + std::to_string(kArtifactFormatVersion) + ", the file is version " + version);
  artifact.method = field("method");
  if (artifact.method.empty()) fail_input(path, "__metadata__.kvforge.method", "empty");
  ModelFingerprint& model = artifact.model;
  model.model_type = field("model.type");
  model.num_layers = parse_count(path, "kvforge.model.layers", field("model.layers"));
  model.num_heads = parse_count(path, "kvforge.model.heads", field("model.heads"));
  model.num_kv_heads = parse_count(path, "kvforge.model.kv_heads", field("model.kv_heads"));
  model.head_dim = parse_count(path, "kvforge.model.head_dim", field("model.head_dim"));
  model.hidden_size = parse_count(path, "kvforge.model.hidden_size", field("model.hidden_size"));
  model.vocab_size = parse_count(path, "kvforge.model.vocab_size", field("model.vocab_size"));
  model.config_hash = field("model.config_hash");
  artifact.recipe = field("recipe");
  try {
    const nlohmann::json metrics = nlohmann::json::parse(field("metrics"));  // items() must not outlive it
    if (!metrics.is_object()) throw nlohmann::json::type_error::create(302, "not an object", &metrics);
    for (const auto& [name, value] : metrics.items()) artifact.metrics[name] = value.get<double>();
  } catch (const nlohmann::json::exception& error) {
    fail_input(path, "__metadata__.kvforge.metrics", std::string("expected a JSON object of numbers: ") + error.what());
  }
  if (auto attributes = metadata.find(std::string(kPrefix) + "attributes"); attributes != metadata.end()) {
    try {
      const nlohmann::json json = nlohmann::json::parse(attributes->second);
      if (!json.is_object()) throw nlohmann::json::type_error::create(302, "not an object", &json);
      for (const auto& [name, value] : json.items()) artifact.attributes[name] = value.get<std::string>();
    } catch (const nlohmann::json::exception& error) {
      fail_input(path, "__metadata__.kvforge.attributes",
                 std::string("expected a JSON object of strings: ") + error.what());
    }
  }
  for (const TensorEntry& entry : file.tensors()) artifact.tensors[entry.name] = view_tensor(file, entry).clone();
  return artifact;
}

void check_artifact_matches(const Artifact& artifact, const ModelConfig& config, const std::string& model_dir) {
  const auto expected = fingerprint_fields(ModelFingerprint::of(config));
  const auto got = fingerprint_fields(artifact.model);
  for (size_t i = 0; i < expected.size(); ++i) {
    if (expected[i].second == got[i].second) continue;
    fail_input(artifact.path, "__metadata__.kvforge." + got[i].first,
               "made for another model: " + got[i].second + " here, " + expected[i].second + " in " + model_dir);
  }
}

}  // namespace kvforge
