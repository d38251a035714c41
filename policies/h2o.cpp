#include <algorithm>
#include <cmath>

#include "policies/baselines.h"

namespace kvforge {

CachePlan plan_h2o(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens) {
  SelectiveLayerOptions layer;
  layer.budget_tokens = budget_tokens(spec, prompt_tokens, /*minimum=*/2);
  layer.recent_tokens =
      std::clamp<int64_t>(std::llround(spec.parameters.at("recent") * layer.budget_tokens), 1, layer.budget_tokens - 1);
  layer.score = TokenScore::kAccumulatedAttention;
  layer.evict_during_decode = true;
  return {spec.label, CacheLayout::kSelective, std::vector<SelectiveLayerOptions>(config.num_layers, layer), {}};
}

}  // namespace kvforge
