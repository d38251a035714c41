#include "runtime/selective_kv_cache.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "runtime/attention_importance.h"

namespace kvforge {

SelectiveKVCache::SelectiveKVCache(std::vector<SelectiveLayerOptions> layers, int64_t batch, int64_t kv_heads,
                                   int64_t head_dim, const at::TensorOptions& options) {
  layers_.resize(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const SelectiveLayerOptions& layer = layers[i];
    if (layer.budget_tokens < layer.sink_tokens + layer.recent_tokens || layer.budget_tokens < 1)
      throw std::invalid_argument("layer " + std::to_string(i) + ": budget_tokens " +
                                  std::to_string(layer.budget_tokens) + " must cover sink + recent tokens (" +
                                  std::to_string(layer.sink_tokens + layer.recent_tokens) + ") and be >= 1");
    if (layer.pool_kernel < 1 || layer.pool_kernel % 2 == 0)
      throw std::invalid_argument("layer " + std::to_string(i) + ": pool_kernel must be odd and >= 1");
    if (layer.decode_keep_fraction < 0 || layer.decode_keep_fraction > 1 ||
        (layer.decode_keep_fraction > 0 && layer.evict_during_decode))
      throw std::invalid_argument("layer " + std::to_string(i) +
                                  ": decode_keep_fraction must be in [0, 1] and excludes evict_during_decode");
    layers_[i].options = layer;
    layers_[i].keys = at::empty({batch, kv_heads, 0, head_dim}, options);
    layers_[i].values = at::empty({batch, kv_heads, 0, head_dim}, options);
    layers_[i].positions = at::empty({batch, kv_heads, 0}, options.dtype(at::kLong));
    layers_[i].scores = at::empty({batch, kv_heads, 0}, options.dtype(at::kFloat));
  }
}

CachedKV SelectiveKVCache::update(int64_t layer_index, const at::Tensor& keys, const at::Tensor& values,
                                  const at::Tensor& positions) {
  Layer& layer = layers_.at(layer_index);
  const int64_t kv_heads = keys.size(1), new_tokens = keys.size(2);
  if (layer.prompt_done) layer.decode_tokens += new_tokens;
  layer.keys = at::cat({layer.keys, keys}, 2);
  layer.values = at::cat({layer.values, values}, 2);
  layer.positions = at::cat({layer.positions, positions.unsqueeze(1).expand({-1, kv_heads, new_tokens})}, 2);
  layer.scores = at::cat({layer.scores, at::zeros({keys.size(0), kv_heads, new_tokens}, layer.scores.options())}, 2);
  CachedKV kv{layer.keys, layer.values, layer.positions};
  // The first chunk is all the cache holds, the same tokens for every head: one row of positions lets the prompt's
  // attention run fused (SDPA's kernel on CUDA, or the banded path under a streaming window) instead of scoring
  // every query-key pair per KV head, which at 32k tokens asked for 64 GiB a sequence.
  if (!layer.prompt_done) kv.positions = positions;
  if (layer.options.streaming_mask) {
    kv.sink_tokens = layer.options.sink_tokens;
    kv.window_tokens = layer.options.recent_tokens;
  }
  return kv;
}

at::Tensor SelectiveKVCache::received(const Layer& layer, const at::Tensor& queries,
                                      const at::Tensor& query_positions) const {
  const SelectiveLayerOptions& options = layer.options;
  return received_attention(queries, query_positions, layer.keys, layer.positions,
                            options.streaming_mask ? options.sink_tokens : 0,
                            options.streaming_mask ? options.recent_tokens : 0);
}

void SelectiveKVCache::after_attention(int64_t layer_index, const at::Tensor& queries, const at::Tensor& positions) {
  Layer& layer = layers_.at(layer_index);
  const SelectiveLayerOptions& options = layer.options;
  const bool first_step = !layer.prompt_done;
  layer.prompt_done = true;
  at::Tensor token_scores;
  switch (options.score) {
    case TokenScore::kNone:
      token_scores = at::zeros_like(layer.scores);
      break;
    case TokenScore::kAccumulatedAttention:
      layer.scores = layer.scores + received(layer, queries, positions);
      token_scores = layer.scores;
      break;
    case TokenScore::kPromptAttention:
      if (first_step) token_scores = received(layer, queries, positions);
      break;
    case TokenScore::kObservationWindow: {
      if (!first_step) break;  // chosen once, from the prompt's last queries
      const int64_t window = std::min<int64_t>(options.observation_window, queries.size(2));
      const int64_t start = queries.size(2) - window;
      at::Tensor votes = received(layer, queries.narrow(2, start, window), positions.narrow(1, start, window));
      // Pooling keeps the neighbours of a hit together, so a needle survives as a phrase, not a token.
      const int64_t slots = votes.size(2);
      token_scores = at::avg_pool1d(votes.reshape({-1, 1, slots}), {options.pool_kernel}, {1},
                                    {options.pool_kernel / 2}, /*ceil_mode=*/false, /*count_include_pad=*/false)
                         .reshape(votes.sizes());
      break;
    }
  }
  const bool may_evict = first_step || options.evict_during_decode;
  if (may_evict && token_scores.defined() && layer.keys.size(2) > options.budget_tokens) {
    if (options.shared_selection) token_scores = token_scores.mean(1, /*keepdim=*/true).expand_as(token_scores);
    evict(layer, token_scores);
  }
  if (first_step) {
    layer.prompt_kept = layer.keys.size(2);
  } else if (options.decode_keep_fraction > 0) {
    evict_at_fixed_index(layer);
  }
}

void SelectiveKVCache::evict_at_fixed_index(Layer& layer) {
  const SelectiveLayerOptions& options = layer.options;
  const auto allowed =
      layer.prompt_kept + static_cast<int64_t>(std::ceil(options.decode_keep_fraction * layer.decode_tokens - 1e-9));
  const int64_t slots = layer.keys.size(2), excess = slots - allowed;
  if (excess <= 0) return;
  const int64_t index = std::clamp(layer.prompt_kept - options.decode_protected_tokens, options.sink_tokens,
                                   std::max<int64_t>(slots - excess, 0));
  auto drop = [&](const at::Tensor& tensor) {
    return at::cat({tensor.narrow(2, 0, index), tensor.narrow(2, index + excess, slots - index - excess)}, 2);
  };
  layer.keys = drop(layer.keys);
  layer.values = drop(layer.values);
  layer.positions = drop(layer.positions);
  layer.scores = drop(layer.scores);
}

void SelectiveKVCache::evict(Layer& layer, const at::Tensor& token_scores) {
  const SelectiveLayerOptions& options = layer.options;
  const at::Tensor& positions = layer.positions;  // [batch, kv_heads, slots]
  at::Tensor newest = std::get<0>(positions.max(-1, /*keepdim=*/true));
  at::Tensor kept =
      (positions >= 0) & ((positions < options.sink_tokens) | (positions > newest - options.recent_tokens));
  const double infinity = std::numeric_limits<double>::infinity();
  at::Tensor ranking = token_scores.to(at::kFloat).masked_fill(kept, infinity).masked_fill(positions < 0, -infinity);
  // Slot order is kept (sorted indices), so the cache stays in position order for every head.
  at::Tensor chosen = std::get<0>(std::get<1>(ranking.topk(options.budget_tokens, -1)).sort(-1));
  at::Tensor chosen_rows = chosen.unsqueeze(-1).expand({-1, -1, -1, layer.keys.size(3)});
  layer.keys = layer.keys.gather(2, chosen_rows);
  layer.values = layer.values.gather(2, chosen_rows);
  layer.positions = positions.gather(2, chosen);
  layer.scores = layer.scores.gather(2, chosen);
}

int64_t SelectiveKVCache::bytes() const {
  int64_t total = 0;
  for (const Layer& layer : layers_) total += layer.keys.nbytes() + layer.values.nbytes();
  return total;
}

}  // namespace kvforge
