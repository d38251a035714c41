#include <algorithm>
#include <cmath>

#include "policies/baselines.h"

namespace kvforge {
namespace {

SelectiveLayerOptions snapkv_layer(const PolicySpec& spec, int64_t budget) {
  SelectiveLayerOptions layer;
  layer.budget_tokens = budget;
  layer.observation_window = std::min<int64_t>(static_cast<int64_t>(spec.parameters.at("window")), budget);
  layer.recent_tokens = layer.observation_window;  // the window's own tokens are always kept
  layer.pool_kernel = static_cast<int64_t>(spec.parameters.at("kernel"));
  layer.score = TokenScore::kObservationWindow;
  // decode=1 holds the budget while generating too (kvpress's DecodingPress, at every step): a long reasoning trace is
  // compressed as well, not only the prompt.
  layer.evict_during_decode = spec.parameters.at("decode") != 0;
  return layer;
}

}  // namespace

CachePlan plan_snapkv(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens) {
  const SelectiveLayerOptions layer = snapkv_layer(spec, budget_tokens(spec, prompt_tokens));
  return {spec.label, CacheLayout::kSelective, std::vector<SelectiveLayerOptions>(config.num_layers, layer), {}};
}

CachePlan plan_pyramidkv(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens) {
  const int64_t budget = budget_tokens(spec, prompt_tokens);
  const int64_t window = std::min<int64_t>(static_cast<int64_t>(spec.parameters.at("window")), budget);
  // PyramidKV's schedule: the selectable part (budget - window) runs linearly from 2·avg - avg/beta in the
  // first layer down to avg/beta in the last, so the layers' mean stays the given budget.
  const double selectable = static_cast<double>(budget - window);
  const double smallest = selectable / spec.parameters.at("beta");
  const double largest = 2 * selectable - smallest;
  CachePlan plan{spec.label, CacheLayout::kSelective, {}, {}};
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    const double fraction = config.num_layers > 1 ? static_cast<double>(layer) / (config.num_layers - 1) : 0.5;
    const int64_t layer_budget = window + static_cast<int64_t>(std::llround(largest - (largest - smallest) * fraction));
    plan.layers.push_back(snapkv_layer(spec, std::max<int64_t>(layer_budget, 1)));
  }
  return plan;
}

}  // namespace kvforge
