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

double optional(const Artifact& artifact, const std::string& key, double fallback, double minimum, double maximum) {
  return artifact.metrics.count(key) != 0 ? required(artifact, key, minimum, maximum) : fallback;
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
          {"chunk", static_cast<double>(config.chunk)},
          {"gates", config.gates ? 1.0 : 0.0},
          {"lora_rank", static_cast<double>(config.lora.rank)},
          {"lora_alpha", config.lora.alpha},
          {"lora_targets", static_cast<double>(config.lora.targets)},
          {"lora_merged", config.lora.merged ? 1.0 : 0.0}};
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
  // Stage-1-only artifacts of earlier versions carry none of these.
  config.gates = optional(artifact, "gates", 1, 0, 1) != 0;
  config.lora.rank = static_cast<int64_t>(optional(artifact, "lora_rank", 0, 0, 1e6));
  if (config.lora.rank > 0) {
    config.lora.alpha = required(artifact, "lora_alpha", 1e-9, 1e9);
    config.lora.targets = static_cast<int>(required(artifact, "lora_targets", 1, 15));
    config.lora.merged = required(artifact, "lora_merged", 0, 1) != 0;
  }
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
  auto count = [&artifact](const std::string& key) {
    auto found = artifact.metrics.find(key);
    return found == artifact.metrics.end() ? int64_t{0} : static_cast<int64_t>(found->second);
  };
  std::string text = std::string(variant_name(config)) + ", window " + std::to_string(config.attention.window);
  if (count("steps") > 0) text += ", " + std::to_string(count("steps")) + " steps";
  if (count("stage2_steps") > 0)
    text += " + " + std::to_string(count("stage2_steps")) +
            (config.lora.rank > 0 ? " LoRA r" + std::to_string(config.lora.rank) : " fine-tune");
  return text;
}

CachePlan plan_lizard(const PolicySpec& spec, const ModelConfig& config, int64_t) {
  CachePlan plan{spec.label, CacheLayout::kFull, {}, {}};
  plan.linearization = lizard_linearization(spec.artifact, config);
  return plan;
}

}  // namespace kvforge
