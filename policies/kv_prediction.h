#pragma once
// KV Prediction: the prompt's cache predicted by the auxiliary model and predictors `kvforge train` (method: kvpred)
// fitted, the base model reading only the prompt's last token; or, with alone=1, the auxiliary model generating on its
// own (the baseline). The artifact holds the predictor's parameters by module name ("auxiliary.model.layers.0...",
// "key_predictors.l.weight" [base kv width, auxiliary kv width], ".bias"), "layer_map" [base layers] int64 (the
// auxiliary layer each base layer reads), the auxiliary's config.json in attributes["auxiliary_config"], and metrics
// with how the auxiliary was made ("pruned_every": keep every k-th base layer, 0 = a separate model) and the
// prefill FLOPs ratio at the training length.
#include <memory>
#include <string>

#include "policies/policy.h"
#include "runtime/kv_prediction.h"

namespace kvforge {

inline constexpr const char* kKvPredictionMethod = "kvpred";

CachePlan plan_kv_prediction(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens);

// The predictor a kvpred artifact holds (InputError naming the artifact and the field or tensor), for the base model
// `config`. Parsed once per artifact and shared.
std::shared_ptr<const KvPredictionWeights> kv_prediction_weights(const std::shared_ptr<const Artifact>& artifact,
                                                                 const ModelConfig& config);

// "every 2nd layer, 300 steps" or "tiny-base, 300 steps": how the auxiliary was made and trained, for report labels,
// with the consistency weight when it is not 1 ("λ=0.1") and "predicted everywhere" when trained without the base's
// own KV after the prompt.
std::string kv_prediction_description(const Artifact& artifact);

}  // namespace kvforge
