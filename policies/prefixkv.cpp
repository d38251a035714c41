#include "policies/prefixkv.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "runtime/input_error.h"

namespace kvforge {
namespace {

constexpr double kBudgetTolerance = 1e-6;

at::Tensor artifact_tensor(const Artifact& artifact, const std::string& name) {
  auto found = artifact.tensors.find(name);
  if (found == artifact.tensors.end()) fail_input(artifact.path, name, "missing from this prefixkv artifact");
  return found->second.to(at::kDouble).contiguous();
}

CachePlan plan_by_layer(const PolicySpec& spec, const std::vector<double>& retained, int64_t prompt_tokens) {
  const auto sink = static_cast<int64_t>(spec.parameters.at("sink"));
  const auto window = static_cast<int64_t>(spec.parameters.at("window"));
  CachePlan plan{spec.label, CacheLayout::kSelective, {}, {}};
  for (double fraction : retained) {
    SelectiveLayerOptions layer;
    layer.sink_tokens = sink;
    layer.score = window > 0 ? TokenScore::kObservationWindow : TokenScore::kPromptAttention;
    layer.observation_window = window;
    layer.pool_kernel = static_cast<int64_t>(spec.parameters.at("kernel"));
    layer.recent_tokens = std::max<int64_t>(window, 1);  // the last token (and a scoring window) always stay
    layer.budget_tokens =
        std::max<int64_t>(sink + layer.recent_tokens, std::llround(fraction * static_cast<double>(prompt_tokens)));
    layer.shared_selection = spec.parameters.at("per_head") == 0;
    layer.evict_during_decode = false;
    if (spec.parameters.at("decode") != 0) layer.decode_keep_fraction = std::clamp(fraction, 0.0, 1.0);
    layer.decode_protected_tokens = static_cast<int64_t>(spec.parameters.at("tail"));
    plan.layers.push_back(layer);
  }
  return plan;
}

}  // namespace

std::vector<double> prefixkv_budgets(const Artifact& artifact) {
  at::Tensor budgets = artifact_tensor(artifact, "budgets");
  return {budgets.data_ptr<double>(), budgets.data_ptr<double>() + budgets.numel()};
}

std::vector<double> prefixkv_layer_fractions(const Artifact& artifact, double budget) {
  const std::vector<double> budgets = prefixkv_budgets(artifact);
  at::Tensor retained = artifact_tensor(artifact, "retained_fraction");
  if (retained.dim() != 2 || retained.size(0) != static_cast<int64_t>(budgets.size()) ||
      retained.size(1) != artifact.model.num_layers)
    fail_input(artifact.path, "retained_fraction",
               "expected shape [budgets, layers] = [" + std::to_string(budgets.size()) + ", " +
                   std::to_string(artifact.model.num_layers) + "]");
  std::ostringstream available;
  for (size_t k = 0; k < budgets.size(); ++k) {
    if (std::abs(budgets[k] - budget) < kBudgetTolerance) {
      at::Tensor row = retained[static_cast<int64_t>(k)].contiguous();
      return {row.data_ptr<double>(), row.data_ptr<double>() + row.numel()};
    }
    available << (k ? ", " : "") << budgets[k];
  }
  fail_input(
      artifact.path, "budgets",
      "no calibration for budget " + (std::ostringstream() << budget).str() + "; this artifact has " + available.str());
}

CachePlan plan_prefixkv(const PolicySpec& spec, const ModelConfig&, int64_t prompt_tokens) {
  return plan_by_layer(spec, prefixkv_layer_fractions(*spec.artifact, spec.parameters.at("budget")), prompt_tokens);
}

CachePlan plan_uniform(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens) {
  const double budget = spec.parameters.at("budget");
  const double fraction = budget <= 1 ? budget : budget / static_cast<double>(std::max<int64_t>(prompt_tokens, 1));
  return plan_by_layer(spec, std::vector<double>(config.num_layers, fraction), prompt_tokens);
}

}  // namespace kvforge
