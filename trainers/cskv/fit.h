#pragma once
// CSKV from a model to its artifact: the initial factors of every layer (svd, asvd or whiten, from calibration
// statistics) and the artifact that holds the fitted ones.
#include <string>
#include <vector>

#include "checkpoints/artifact.h"
#include "runtime/low_rank_kv_cache.h"
#include "runtime/transformer.h"
#include "trainers/cskv/layer_inputs.h"

namespace kvforge::cskv {

enum class Init { kSvd = 0, kAsvd = 1, kWhiten = 2 };  // the numbers are the artifact's "init" metric
Init parse_init(const std::string& text);              // InputError naming the recipe field `init`
const char* init_name(Init init);

struct FitOptions {
  Init init = Init::kAsvd;
  double asvd_alpha = 0.5;
  int64_t key_rank = 0;  // of the whole K projection (all KV heads)
  int64_t value_rank = 0;
  int64_t window = 32;
  int64_t group = 32;
  int64_t bits = 16;
};

// float32 factors on the model's device with requires_grad set (and the projections' biases, when the model has
// them). statistics: mean_abs for asvd, second_moment for whiten.
std::vector<LowRankLayer> initial_factors(Transformer& model, const FitOptions& options,
                                          const InputStatistics& statistics);

// errors: [layers, 2 or 3] relative squared errors (keys after RoPE, values[, key scores]) at export; metrics:
// extra numbers.
Artifact cskv_artifact(const std::vector<LowRankLayer>& factors, const FitOptions& options, const at::Tensor& errors,
                       const ModelConfig& config, const std::string& recipe, std::map<std::string, double> metrics);

}  // namespace kvforge::cskv
