#pragma once
// Lizard (and its LoLCATs-style baseline): the model's attention linearized with the feature maps, gates and sink
// logits `kvforge train` (method: lizard) fitted; decoding keeps a constant-size state (LinearizedCache). The artifact
// holds "layers.l.query_map", "layers.l.key_map" [heads, head_dim, features], Lizard's "layers.l.gate_weight"
// [heads, hidden], "layers.l.gate_bias" [heads] and "layers.l.sink_logits" [heads, sinks], or LoLCATs'
// "layers.l.window_logits" [heads]; its metrics hold the configuration (kind 0 = Lizard, 1 = LoLCATs; window,
// feature_dim, sinks, features_after_rope, linear_keys 0 = outside the window / 1 = all, window_scale, chunk).
#include <memory>
#include <string>

#include "policies/policy.h"
#include "runtime/linearized_attention.h"

namespace kvforge {

inline constexpr const char* kLizardMethod = "lizard";

CachePlan plan_lizard(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens);

// The linearization a lizard artifact holds, on the CPU in float32 (InputError naming the artifact and the metric or
// tensor). Parsed once per artifact and shared.
std::shared_ptr<const Linearization> lizard_linearization(const std::shared_ptr<const Artifact>& artifact,
                                                          const ModelConfig& config);

// The artifact's configuration as its metrics record it (the writer's inverse).
LinearizationConfig lizard_config(const Artifact& artifact);
std::map<std::string, double> lizard_config_metrics(const LinearizationConfig& config);

// "Lizard, window 64" or "LoLCATs-style, window 64", with the training steps, for report labels.
std::string lizard_description(const Artifact& artifact);

}  // namespace kvforge
