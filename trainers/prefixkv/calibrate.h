#pragma once
// PrefixKV calibration: prefill each calibration prompt once, record every layer's token importance, run the
// threshold search for every requested budget, and average the per-layer retained fractions over the samples.
// Nothing is trained; the result is the budget artifact the prefixkv policy reads.
#include <functional>
#include <string>
#include <vector>

#include "checkpoints/artifact.h"
#include "runtime/transformer.h"

namespace kvforge {
class DataParallel;
}

namespace kvforge::prefixkv {

// Token importance of one prompt, per layer: attention each token receives, summed over every prompt query and
// averaged over all query heads (GQA: each query head counts once, whichever KV head it shares), so a layer's
// profile does not depend on how its heads are grouped. [layer][token].
std::vector<std::vector<double>> layer_importance(Transformer& model, const std::vector<int64_t>& tokens);

struct CalibrationOptions {
  std::vector<double> budgets;  // retained fractions in (0, 1], the paper's x-axis
  int64_t sink_tokens = 4;      // never evicted, with the last token
};

struct SampleResult {
  int64_t tokens = 0;
  std::vector<double> thresholds;             // [budget] the p each budget's search settled on
  std::vector<std::vector<double>> retained;  // [budget][layer] fraction of the prompt kept
};

struct Calibration {
  std::vector<double> budgets;
  std::vector<std::vector<double>> retained;         // [budget][layer] mean over samples
  std::vector<std::vector<double>> retained_spread;  // [budget][layer] standard deviation over samples
  std::vector<SampleResult> samples;
  double seconds = 0;
};

using CalibrationProgress = std::function<void(size_t done, size_t total, const SampleResult& sample)>;

// InputError (naming the recipe field) for no budgets, a budget outside (0, 1] or negative sinks.
void check_options(const CalibrationOptions& options);

// InputError for bad options or a prompt too short to evict anything from. With `parallel`, each rank prefills its
// shard of the prompts and every rank returns the same calibration, equal to one process's. `progress` counts the
// calling rank's prompts.
Calibration calibrate(Transformer& model, const std::vector<std::vector<int64_t>>& prompts,
                      const CalibrationOptions& options, const CalibrationProgress& progress = nullptr,
                      DataParallel* parallel = nullptr);

// The artifact: tensors "budgets" [K], "retained_fraction" [K, layers], "retained_spread" [K, layers] (float64);
// metrics: calibration samples, mean prompt tokens, seconds, sink tokens.
Artifact calibration_artifact(const Calibration& calibration, const CalibrationOptions& options,
                              const ModelConfig& config, const std::string& recipe);

}  // namespace kvforge::prefixkv
