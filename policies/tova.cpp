#include "policies/baselines.h"

namespace kvforge {

CachePlan plan_tova(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens) {
  SelectiveLayerOptions layer;
  layer.budget_tokens = budget_tokens(spec, prompt_tokens, /*minimum=*/2);
  // The newest token is the one doing the scoring: TOVA's reference keeps it (kvpress scores it as the maximum).
  layer.recent_tokens = 1;
  layer.score = TokenScore::kNewestQueryAttention;
  layer.shared_selection = true;  // the paper averages the scores over the layer's heads
  layer.evict_during_decode = true;
  return {spec.label, CacheLayout::kSelective, std::vector<SelectiveLayerOptions>(config.num_layers, layer), {}};
}

}  // namespace kvforge
