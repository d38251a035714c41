#include "policies/cache_plan.h"

#include <algorithm>

#include "runtime/rope.h"

namespace kvforge {
namespace {

// The compressed-cache decode kernels attend every held token: models with sliding-window layers keep the masked path.
bool windowed(const ModelConfig& config) {
  return std::any_of(config.sliding_window.begin(), config.sliding_window.end(),
                     [](int64_t window) { return window > 0; });
}

}  // namespace

std::unique_ptr<KVCache> make_cache(const CachePlan& plan, const ModelConfig& config, int64_t batch, int64_t capacity,
                                    const at::TensorOptions& options) {
  switch (plan.layout) {
    case CacheLayout::kFull:
      return std::make_unique<FullKVCache>(config.num_layers, batch, config.num_kv_heads, config.head_dim, capacity,
                                           options);
    case CacheLayout::kSelective:
      return std::make_unique<SelectiveKVCache>(plan.layers, batch, config.num_kv_heads, config.head_dim, options,
                                                capacity, rope_inverse_frequencies(config.rope, config.head_dim));
    case CacheLayout::kQuantized:
      return std::make_unique<QuantizedKVCache>(config.num_layers, batch, config.num_kv_heads, config.head_dim,
                                                plan.quantization, options, windowed(config) ? 0 : config.num_heads);
    case CacheLayout::kMixedHeads:
      return std::make_unique<MixedHeadKVCache>(plan.heads.streaming, plan.heads.sink_tokens, plan.heads.recent_tokens,
                                                batch, config.head_dim, capacity, options,
                                                windowed(config) ? 0 : config.num_heads);
    case CacheLayout::kLowRank:
      return std::make_unique<LowRankKVCache>(plan.low_rank.factors, plan.low_rank.options, batch, config.num_kv_heads,
                                              config.head_dim, rope_inverse_frequencies(config.rope, config.head_dim),
                                              options, windowed(config) ? 0 : config.num_heads, capacity);
  }
  return nullptr;
}

}  // namespace kvforge
