#include <algorithm>

#include "policies/baselines.h"

namespace kvforge {

CachePlan plan_streaming(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens) {
  SelectiveLayerOptions layer;
  const int64_t sink = static_cast<int64_t>(spec.parameters.at("sink"));
  const int64_t window = static_cast<int64_t>(spec.parameters.at("window"));
  if (window > 0) {  // an explicit window wins over a budget
    layer.sink_tokens = sink;
    layer.recent_tokens = window;
  } else {
    const int64_t budget = budget_tokens(spec, prompt_tokens, /*minimum=*/2);
    layer.sink_tokens = std::min(sink, budget / 2);
    layer.recent_tokens = budget - layer.sink_tokens;
  }
  layer.budget_tokens = layer.sink_tokens + layer.recent_tokens;
  layer.score = TokenScore::kNone;
  layer.streaming_mask = true;
  layer.evict_during_decode = true;
  return {spec.label, CacheLayout::kSelective, std::vector<SelectiveLayerOptions>(config.num_layers, layer), {}};
}

}  // namespace kvforge
