#include <algorithm>

#include "policies/baselines.h"

namespace kvforge {

CachePlan plan_expected_attention(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens) {
  SelectiveLayerOptions layer;
  layer.budget_tokens = budget_tokens(spec, prompt_tokens);
  layer.expected.sink_tokens = static_cast<int64_t>(spec.parameters.at("sink"));
  layer.expected.future_positions = static_cast<int64_t>(spec.parameters.at("future"));
  layer.expected.use_covariance = spec.parameters.at("covariance") != 0;
  layer.expected.use_value_norm = spec.parameters.at("vnorm") != 0;
  // The sinks stay out of the statistics and, as kvpress scores them at the maximum, in the cache.
  layer.sink_tokens = std::min(layer.expected.sink_tokens, layer.budget_tokens);
  layer.score = TokenScore::kExpectedAttention;
  layer.evict_during_decode = false;  // a prompt compressor: generated tokens are kept
  return {spec.label, CacheLayout::kSelective, std::vector<SelectiveLayerOptions>(config.num_layers, layer), {}};
}

}  // namespace kvforge
