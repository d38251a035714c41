#pragma once
// PrefixKV (Wang et al.): per-layer KV budgets calibrated offline (kvforge train with method: prefixkv) and the
// same eviction with one budget everywhere ("uniform", the paper's ablation baseline). After prefill each layer
// keeps its share of the prompt: the sink tokens and the last token always, then the tokens that received the
// most attention (from every prompt query, or from the last `window` queries as SnapKV scores). While decoding a
// layer keeps its fraction of the growing sequence, dropping one slot at a fixed index (Elastic Cache's rule).
#include <memory>
#include <string>
#include <vector>

#include "policies/policy.h"

namespace kvforge {

// Artifact tensors: "budgets" [K] float64 (retained fractions calibrated for), "retained_fraction" [K, layers].
inline constexpr const char* kPrefixKvMethod = "prefixkv";

CachePlan plan_prefixkv(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens);
CachePlan plan_uniform(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens);

// The per-layer retained fractions the artifact holds for `budget` (InputError naming the artifact and the
// budgets it has when none matches).
std::vector<double> prefixkv_layer_fractions(const Artifact& artifact, double budget);
// The budgets a PrefixKV artifact was calibrated for, in file order.
std::vector<double> prefixkv_budgets(const Artifact& artifact);

}  // namespace kvforge
