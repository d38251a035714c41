#include "policies/lizard.h"

#include <torch/utils.h>

#include "policies/parsed_artifact.h"
#include "runtime/input_error.h"

namespace kvforge {
namespace {

double required(const Artifact& artifact, const std::string& key, double minimum, double maximum) {
  auto found = artifact.metrics.find(key);
  if (found == artifact.metrics.end() || !(found->second >= minimum && found->second <= maximum))
    fail_input(artifact.path, "__metadata__.kvforge.metrics." + key,
               "expected a number in [" + std::to_string(minimum) + ", " + std::to_string(maximum) + "]");
  return found->second;
}

}  // namespace

std::map<std::string, double> lizard_config_metrics(const LinearizationConfig& config) {
  return {{"kind", config.attention.kind == HybridKind::kLizard ? 0.0 : 1.0},
          {"window", static_cast<double>(config.attention.window)},
          {"feature_dim", static_cast<double>(config.feature_dim)},
          {"sinks", static_cast<double>(config.sinks)},
          {"features_after_rope", config.features_after_rope ? 1.0 : 0.0},
          {"linear_keys", config.attention.linear_keys == LinearKeys::kAll ? 1.0 : 0.0},
          {"window_scale", config.attention.window_scale},
          {"chunk", static_cast<double>(config.chunk)}};
}

LinearizationConfig lizard_config(const Artifact& artifact) {
  LinearizationConfig config;
  config.attention.kind = required(artifact, "kind", 0, 1) == 0 ? HybridKind::kLizard : HybridKind::kLolcats;
  config.attention.window = static_cast<int64_t>(required(artifact, "window", 1, 1e9));
  config.attention.linear_keys =
      required(artifact, "linear_keys", 0, 1) == 0 ? LinearKeys::kOutsideWindow : LinearKeys::kAll;
  config.attention.window_scale = required(artifact, "window_scale", -1e9, 1e9);
  config.feature_dim = static_cast<int64_t>(required(artifact, "feature_dim", 1, 1e6));
  config.sinks = static_cast<int64_t>(required(artifact, "sinks", 0, 1e6));
  config.features_after_rope = required(artifact, "features_after_rope", 0, 1) != 0;
  config.chunk = static_cast<int64_t>(required(artifact, "chunk", 1, 1e6));
  return config;
}

std::shared_ptr<const Linearization> lizard_linearization(const std::shared_ptr<const Artifact>& artifact,
                                                          const ModelConfig& config) {
  return parsed_once<Linearization>(artifact, [&artifact, &config] {
    auto linearization =
        std::make_shared<Linearization>(config, lizard_config(*artifact), at::TensorOptions().dtype(at::kFloat));
    torch::NoGradGuard no_grad;
    for (auto& [name, parameter] : linearization->named_parameters()) {
      auto stored = artifact->tensors.find(name);
      if (stored == artifact->tensors.end()) fail_input(artifact->path, name, "missing");
      if (stored->second.sizes() != parameter.sizes())
        fail_input(artifact->path, name,
                   "expected shape " + c10::str(parameter.sizes()) + ", got " + c10::str(stored->second.sizes()));
      parameter.copy_(stored->second);
      parameter.set_requires_grad(false);
    }
    return std::shared_ptr<const Linearization>(linearization);
  });
}

std::string lizard_description(const Artifact& artifact) {
  const LinearizationConfig config = lizard_config(artifact);
  auto steps = artifact.metrics.find("steps");
  return std::string(config.attention.kind == HybridKind::kLizard ? "Lizard" : "LoLCATs-style") + ", window " +
         std::to_string(config.attention.window) +
         (steps == artifact.metrics.end() ? "" : ", " + std::to_string(static_cast<int64_t>(steps->second)) + " steps");
}

CachePlan plan_lizard(const PolicySpec& spec, const ModelConfig& config, int64_t) {
  CachePlan plan{spec.label, CacheLayout::kFull, {}, {}};
  plan.linearization = lizard_linearization(spec.artifact, config);
  return plan;
}

}  // namespace kvforge
