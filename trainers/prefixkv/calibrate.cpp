#include "trainers/prefixkv/calibrate.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>
#include <tuple>
#include <utility>

#include "policies/prefixkv.h"
#include "runtime/attention_importance.h"
#include "runtime/generate.h"
#include "runtime/input_error.h"
#include "runtime/parallel/distributed.h"
#include "trainers/prefixkv/budget_search.h"

namespace kvforge::prefixkv {
namespace {

// A full cache that also records, per layer, the attention each slot received from this step's queries.
class ImportanceRecorder : public KVCache {
 public:
  ImportanceRecorder(std::unique_ptr<KVCache> inner, int64_t layers)
      : inner_(std::move(inner)), attended_(layers), importance_(layers) {}

  CachedKV update(int64_t layer, const at::Tensor& keys, const at::Tensor& values,
                  const at::Tensor& positions) override {
    attended_[layer] = inner_->update(layer, keys, values, positions);
    return attended_[layer];
  }
  void after_attention(int64_t layer, const at::Tensor& queries, const at::Tensor& positions) override {
    const CachedKV& kv = attended_[layer];
    // Mean over KV heads of the per-group means = mean over all query heads (groups are equal in size).
    importance_[layer] = received_attention(queries, positions, kv.keys, kv.positions).mean(1)[0].to(at::kDouble).cpu();
    attended_[layer] = {};
  }
  int64_t length(int64_t layer) const override { return inner_->length(layer); }
  int64_t bytes() const override { return inner_->bytes(); }
  const at::Tensor& importance(int64_t layer) const { return importance_[layer]; }

 private:
  std::unique_ptr<KVCache> inner_;
  std::vector<CachedKV> attended_;
  std::vector<at::Tensor> importance_;
};

// Mean and (population) standard deviation.
std::pair<double, double> mean_and_spread(const std::vector<double>& values) {
  double mean = 0, square = 0;
  for (double value : values) mean += value;
  mean /= static_cast<double>(values.size());
  for (double value : values) square += (value - mean) * (value - mean);
  return {mean, std::sqrt(square / static_cast<double>(values.size()))};
}

// Every rank's samples on every rank: each writes the rows it computed into a zeroed table of all samples and the
// ranks sum the tables (adding zeros is exact, so the result is bit-identical to one process's).
void gather_samples(std::vector<SampleResult>& samples, const std::vector<int64_t>& mine,
                    const CalibrationOptions& options, int64_t layers, DataParallel& parallel) {
  const auto budgets = static_cast<int64_t>(options.budgets.size());
  const int64_t width = 1 + budgets * (1 + layers);  // tokens, then per budget its threshold and retained fractions
  std::vector<double> table(samples.size() * width, 0.0);
  for (int64_t index : mine) {
    double* row = table.data() + index * width;
    const SampleResult& sample = samples[index];
    row[0] = static_cast<double>(sample.tokens);
    for (int64_t k = 0; k < budgets; ++k) {
      row[1 + k * (1 + layers)] = sample.thresholds[k];
      std::copy(sample.retained[k].begin(), sample.retained[k].end(), row + 2 + k * (1 + layers));
    }
  }
  table = parallel.all_reduce_sum(std::move(table));
  for (size_t index = 0; index < samples.size(); ++index) {
    const double* row = table.data() + index * width;
    SampleResult sample;
    sample.tokens = static_cast<int64_t>(row[0]);
    for (int64_t k = 0; k < budgets; ++k) {
      sample.thresholds.push_back(row[1 + k * (1 + layers)]);
      sample.retained.emplace_back(row + 2 + k * (1 + layers), row + 2 + k * (1 + layers) + layers);
    }
    samples[index] = std::move(sample);
  }
}

}  // namespace

std::vector<std::vector<double>> layer_importance(Transformer& model, const std::vector<int64_t>& tokens) {
  torch::NoGradGuard no_grad;
  const auto count = static_cast<int64_t>(tokens.size());
  const at::Device device = model->output_weight().device();
  ImportanceRecorder recorder(make_full_cache(model, 1, count), model->config.num_layers);
  model->forward(at::tensor(tokens, at::kLong).unsqueeze(0).to(device),
                 at::arange(count, at::kLong).unsqueeze(0).to(device), &recorder, /*last_only=*/true);
  std::vector<std::vector<double>> importance;
  for (int64_t layer = 0; layer < model->config.num_layers; ++layer) {
    const at::Tensor& row = recorder.importance(layer);
    importance.emplace_back(row.data_ptr<double>(), row.data_ptr<double>() + row.numel());
  }
  return importance;
}

void check_options(const CalibrationOptions& options) {
  if (options.budgets.empty()) fail_input("recipe", "budgets", "expected at least one retained fraction");
  for (double budget : options.budgets)
    if (!(budget > 0 && budget <= 1))
      fail_input("recipe", "budgets",
                 "expected retained fractions in (0, 1], got " + (std::ostringstream() << budget).str());
  if (options.sink_tokens < 0) fail_input("recipe", "sink_tokens", "expected >= 0");
}

Calibration calibrate(Transformer& model, const std::vector<std::vector<int64_t>>& prompts,
                      const CalibrationOptions& options, const CalibrationProgress& progress, DataParallel* parallel) {
  const auto start = std::chrono::steady_clock::now();
  check_options(options);
  if (prompts.empty()) fail_input("recipe", "calibration", "no calibration prompts");
  const int64_t protected_tokens = options.sink_tokens + 1;  // the sinks and the last token
  const int64_t layers = model->config.num_layers;
  for (size_t i = 0; i < prompts.size(); ++i)
    if (static_cast<int64_t>(prompts[i].size()) <= protected_tokens)
      fail_input("calibration prompt " + std::to_string(i), "tokens",
                 "expected more than " + std::to_string(protected_tokens) + " (sinks + last token), got " +
                     std::to_string(prompts[i].size()));
  Calibration calibration;
  calibration.budgets = options.budgets;
  calibration.samples.resize(prompts.size());
  const auto total = static_cast<int64_t>(prompts.size());
  const std::vector<int64_t> mine = owned_items(total, parallel);
  for (size_t done = 0; done < mine.size(); ++done) {
    const std::vector<int64_t>& prompt = prompts[mine[done]];
    const auto tokens = static_cast<int64_t>(prompt.size());
    const std::vector<std::vector<double>> importance = layer_importance(model, prompt);
    SampleResult& sample = calibration.samples[mine[done]];
    sample.tokens = tokens;
    for (double budget : options.budgets) {
      const Allocation allocation = allocate_evictions(importance, 1 - budget, protected_tokens);
      sample.thresholds.push_back(allocation.threshold);
      std::vector<double> retained;
      for (int64_t evicted : allocation.evicted)
        retained.push_back(1 - static_cast<double>(evicted) / static_cast<double>(tokens));
      sample.retained.push_back(retained);
    }
    if (progress) progress(done + 1, mine.size(), sample);
  }
  if (parallel != nullptr && parallel->world_size() > 1)
    gather_samples(calibration.samples, mine, options, layers, *parallel);
  // The per-sample allocations are averaged per layer (the reference does this offline, outside its code).
  for (size_t k = 0; k < options.budgets.size(); ++k) {
    std::vector<double> mean(layers), spread(layers);
    for (int64_t layer = 0; layer < layers; ++layer) {
      std::vector<double> values;
      for (const SampleResult& sample : calibration.samples) values.push_back(sample.retained[k][layer]);
      std::tie(mean[layer], spread[layer]) = mean_and_spread(values);
    }
    calibration.retained.push_back(mean);
    calibration.retained_spread.push_back(spread);
  }
  calibration.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return calibration;
}

Artifact calibration_artifact(const Calibration& calibration, const CalibrationOptions& options,
                              const ModelConfig& config, const std::string& recipe) {
  Artifact artifact;
  artifact.method = kPrefixKvMethod;
  artifact.model = ModelFingerprint::of(config);
  artifact.recipe = recipe;
  auto matrix = [&](const std::vector<std::vector<double>>& rows) {
    at::Tensor tensor = at::empty({static_cast<int64_t>(rows.size()), config.num_layers}, at::kDouble);
    for (size_t k = 0; k < rows.size(); ++k)
      for (int64_t layer = 0; layer < config.num_layers; ++layer)
        tensor[static_cast<int64_t>(k)][layer] = rows[k][layer];
    return tensor;
  };
  artifact.tensors["budgets"] = at::tensor(calibration.budgets, at::kDouble);
  artifact.tensors["retained_fraction"] = matrix(calibration.retained);
  artifact.tensors["retained_spread"] = matrix(calibration.retained_spread);
  double tokens = 0;
  for (const SampleResult& sample : calibration.samples) tokens += static_cast<double>(sample.tokens);
  artifact.metrics["calibration_samples"] = static_cast<double>(calibration.samples.size());
  artifact.metrics["calibration_mean_tokens"] = tokens / static_cast<double>(calibration.samples.size());
  artifact.metrics["calibration_seconds"] = calibration.seconds;
  artifact.metrics["sink_tokens"] = static_cast<double>(options.sink_tokens);
  return artifact;
}

}  // namespace kvforge::prefixkv
