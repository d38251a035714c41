#include "policies/kv_prediction.h"

#include <nlohmann/json.hpp>
#include <sstream>

#include "policies/parsed_artifact.h"
#include "runtime/input_error.h"

namespace kvforge {
namespace {

double metric(const Artifact& artifact, const std::string& key, double fallback) {
  auto found = artifact.metrics.find(key);
  return found == artifact.metrics.end() ? fallback : found->second;
}

std::string ordinal(int64_t n) {
  const int64_t tens = n % 100;
  const char* suffix = (tens >= 11 && tens <= 13) ? "th"
                       : n % 10 == 1              ? "st"
                       : n % 10 == 2              ? "nd"
                       : n % 10 == 3              ? "rd"
                                                  : "th";
  return std::to_string(n) + suffix;
}

ModelConfig auxiliary_config(const Artifact& artifact) {
  auto found = artifact.attributes.find("auxiliary_config");
  if (found == artifact.attributes.end())
    fail_input(artifact.path, "__metadata__.kvforge.attributes.auxiliary_config",
               "missing: the auxiliary's config.json");
  try {
    return ModelConfig::from_json(nlohmann::json::parse(found->second),
                                  artifact.path + ": __metadata__.kvforge.attributes.auxiliary_config");
  } catch (const nlohmann::json::exception& error) {
    fail_input(artifact.path, "__metadata__.kvforge.attributes.auxiliary_config",
               std::string("expected config.json text: ") + error.what());
  }
}

}  // namespace

std::shared_ptr<const KvPredictionWeights> kv_prediction_weights(const std::shared_ptr<const Artifact>& artifact,
                                                                 const ModelConfig& config) {
  return parsed_once<KvPredictionWeights>(artifact, [&artifact, &config] {
    const ModelConfig auxiliary = auxiliary_config(*artifact);
    auto map_tensor = artifact->tensors.find("layer_map");
    if (map_tensor == artifact->tensors.end() || map_tensor->second.dim() != 1 ||
        map_tensor->second.scalar_type() != at::kLong)
      fail_input(artifact->path, "layer_map", "expected an int64 tensor [base layers]");
    const at::Tensor map = map_tensor->second.contiguous();
    std::vector<int64_t> layer_map(map.data_ptr<int64_t>(), map.data_ptr<int64_t>() + map.numel());
    validate_layer_map(layer_map, config.num_layers, auxiliary.num_layers, artifact->path, "layer_map");
    std::map<std::string, at::Tensor> parameters = artifact->tensors;
    parameters.erase("layer_map");
    return std::make_shared<const KvPredictionWeights>(config, auxiliary, std::move(layer_map), std::move(parameters),
                                                       artifact->path);
  });
}

std::string kv_prediction_description(const Artifact& artifact) {
  const auto every = static_cast<int64_t>(metric(artifact, "pruned_every", 0));
  const auto steps = static_cast<int64_t>(metric(artifact, "steps", 0));
  std::string made = every > 0 ? "every " + ordinal(every) + " layer" : "separate auxiliary";
  if (every == 0) {
    auto name = artifact.attributes.find("auxiliary_name");
    if (name != artifact.attributes.end()) made = name->second;
  }
  std::string text = made + ", " + std::to_string(steps) + " steps";
  const double weight = metric(artifact, "consistency_weight", 1);
  if (weight != 1) {
    std::ostringstream number;
    number << weight;
    text += ", \xCE\xBB=" + number.str();  // λ
  }
  if (metric(artifact, "own_kv", 1) == 0) text += ", predicted everywhere";
  return text;
}

CachePlan plan_kv_prediction(const PolicySpec& spec, const ModelConfig& config, int64_t) {
  CachePlan plan{spec.label, CacheLayout::kFull, {}, {}};
  plan.kv_prediction = kv_prediction_weights(spec.artifact, config);
  plan.auxiliary_alone = spec.parameters.at("alone") != 0;
  return plan;
}

}  // namespace kvforge
