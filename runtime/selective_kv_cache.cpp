#include "runtime/selective_kv_cache.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

#include "runtime/attention_importance.h"

namespace kvforge {

SelectiveKVCache::SelectiveKVCache(std::vector<SelectiveLayerOptions> layers, int64_t batch, int64_t kv_heads,
                                   int64_t head_dim, const at::TensorOptions& options, int64_t capacity,
                                   at::Tensor inv_freq)
    : capacity_(capacity), inv_freq_(std::move(inv_freq)) {
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
    if (layer.score == TokenScore::kExpectedAttention && !inv_freq_.defined())
      throw std::invalid_argument("layer " + std::to_string(i) + ": expected attention needs the model's inv_freq");
    Layer& held = layers_[i];
    held.options = layer;
    held.key_store = at::empty({batch, kv_heads, 0, head_dim}, options);
    held.value_store = at::empty({batch, kv_heads, 0, head_dim}, options);
    held.position_store = at::empty({batch, kv_heads, 0}, options.dtype(at::kLong));
    held.score_store = at::empty({batch, kv_heads, 0}, options.dtype(at::kFloat));
    refresh_views(held);
  }
}

void SelectiveKVCache::refresh_views(Layer& layer) {
  layer.keys = layer.key_store.narrow(2, 0, layer.length);
  layer.values = layer.value_store.narrow(2, 0, layer.length);
  layer.positions = layer.position_store.narrow(2, 0, layer.length);
  layer.scores = layer.score_store.narrow(2, 0, layer.length);
}

int64_t SelectiveKVCache::slot_capacity(int64_t layer) const { return layers_.at(layer).key_store.size(2); }

int64_t SelectiveKVCache::decode_room(const Layer& layer, int64_t kept) const {
  if (layer.options.evict_during_decode) return std::max<int64_t>(layer.options.budget_tokens + 1 - kept, 1);
  return std::max<int64_t>(capacity_ - layer.prompt_tokens, 1);
}

void SelectiveKVCache::reserve(Layer& layer, int64_t slots) {
  const int64_t capacity = layer.key_store.size(2);
  if (slots <= capacity) return;
  const int64_t grown = std::max(slots, 2 * capacity);
  auto enlarge = [&](at::Tensor& store, double fill) {
    std::vector<int64_t> shape = store.sizes().vec();
    shape[2] = grown;
    at::Tensor bigger = at::full(shape, fill, store.options());
    bigger.narrow(2, 0, layer.length).copy_(store.narrow(2, 0, layer.length));
    store = bigger;
  };
  enlarge(layer.key_store, 0.0);
  enlarge(layer.value_store, 0.0);
  enlarge(layer.position_store, -1.0);
  enlarge(layer.score_store, 0.0);
  refresh_views(layer);
}

void SelectiveKVCache::store(Layer& layer, const at::Tensor& keys, const at::Tensor& values,
                             const at::Tensor& positions, const at::Tensor& scores, int64_t reserve_slots) {
  const int64_t slots = keys.size(2), capacity = slots + reserve_slots;
  if (layer.key_store.size(2) < capacity) {
    // Fresh stores of the final size, so the prompt's full-length buffers are not kept alive.
    auto sized = [&](const at::Tensor& like, double fill) {
      std::vector<int64_t> shape = like.sizes().vec();
      shape[2] = capacity;
      return at::full(shape, fill, like.options());
    };
    layer.key_store = sized(layer.key_store, 0.0);
    layer.value_store = sized(layer.value_store, 0.0);
    layer.position_store = sized(layer.position_store, -1.0);
    layer.score_store = sized(layer.score_store, 0.0);
  }
  layer.key_store.narrow(2, 0, slots).copy_(keys);
  layer.value_store.narrow(2, 0, slots).copy_(values);
  layer.position_store.narrow(2, 0, slots).copy_(positions);
  layer.score_store.narrow(2, 0, slots).copy_(scores);
  layer.length = slots;
  layer.pending = false;
  refresh_views(layer);
}

CachedKV SelectiveKVCache::update(int64_t layer_index, const at::Tensor& keys, const at::Tensor& values,
                                  const at::Tensor& positions) {
  Layer& layer = layers_.at(layer_index);
  const int64_t batch = keys.size(0), kv_heads = keys.size(1), new_tokens = keys.size(2);
  const at::Tensor head_positions = positions.unsqueeze(1).expand({batch, kv_heads, new_tokens});
  if (layer.pending) store(layer, layer.keys, layer.values, layer.positions, layer.scores, new_tokens);
  const bool first_chunk = !layer.prompt_done && layer.length == 0;
  if (layer.prompt_done && !fixed_shape_) layer.decode_tokens += new_tokens;  // fixed-shape steps: as they are done
  if (first_chunk) {
    // Attended and scored where it lies; after_attention stores what survives.
    layer.pending = true;
    layer.prompt_tokens = new_tokens;
    layer.keys = keys;
    layer.values = values;
    layer.positions = head_positions;
    layer.scores = at::zeros({batch, kv_heads, new_tokens}, layer.score_store.options());
  } else if (new_tokens == 1 && layer.length == layer.options.budget_tokens && replaces_before_attention(layer)) {
    replace_oldest(layer, keys, values, head_positions);
  } else if (layer.next_slot.defined()) {
    layer.key_store.index_copy_(2, layer.next_slot, keys);
    layer.value_store.index_copy_(2, layer.next_slot, values);
    layer.position_store.index_copy_(2, layer.next_slot, head_positions);
    layer.next_slot.add_(1);
  } else {
    reserve(layer, layer.length + new_tokens);
    layer.key_store.narrow(2, layer.length, new_tokens).copy_(keys);
    layer.value_store.narrow(2, layer.length, new_tokens).copy_(values);
    layer.position_store.narrow(2, layer.length, new_tokens).copy_(head_positions);
    layer.score_store.narrow(2, layer.length, new_tokens).zero_();
    layer.length += new_tokens;
    refresh_views(layer);
  }
  // A growing fixed-shape layer hands over its whole stores, the slots still to come at position -1.
  CachedKV kv = layer.next_slot.defined() ? CachedKV{layer.key_store, layer.value_store, layer.position_store}
                                          : CachedKV{layer.keys, layer.values, layer.positions};
  // The first chunk is all the cache holds, the same tokens for every head: one row of positions lets the prompt's
  // attention run fused (SDPA's kernel on CUDA, or the banded path under a streaming window) instead of scoring
  // every query-key pair per KV head, which at 32k tokens asked for 64 GiB a sequence.
  if (first_chunk) kv.positions = positions;
  if (layer.options.streaming_mask) {
    kv.sink_tokens = layer.options.sink_tokens;
    kv.window_tokens = layer.options.recent_tokens;
  }
  return kv;
}

at::Tensor SelectiveKVCache::received(const Layer& layer, const at::Tensor& queries,
                                      const at::Tensor& query_positions) const {
  const SelectiveLayerOptions& options = layer.options;
  // The first chunk holds the same tokens for every head: one row of positions builds a mask a KV-head count smaller.
  const at::Tensor positions = layer.pending ? layer.positions.select(1, 0) : layer.positions;
  return received_attention(queries, query_positions, layer.keys, positions,
                            options.streaming_mask ? options.sink_tokens : 0,
                            options.streaming_mask ? options.recent_tokens : 0, /*queries_trail_keys=*/layer.pending);
}

at::Tensor SelectiveKVCache::pooled_votes(const Layer& layer, const at::Tensor& queries,
                                          const at::Tensor& query_positions) const {
  const at::Tensor votes = received(layer, queries, query_positions);  // [batch, kv_heads, slots]
  const int64_t kernel = layer.options.pool_kernel, slots = votes.size(2);
  // Pooling keeps the neighbours of a hit together, so a needle survives as a phrase, not a token. Neighbours by
  // position: slots are in position order until a decode step moves a token into an evicted one's slot.
  auto pool = [&](const at::Tensor& ordered) {
    return at::avg_pool1d(ordered.reshape({-1, 1, slots}), {kernel}, {1}, {kernel / 2}, /*ceil_mode=*/false,
                          /*count_include_pad=*/false)
        .reshape(ordered.sizes());
  };
  if (kernel == 1) return votes;
  if (layer.pending || !layer.options.evict_during_decode) return pool(votes);
  const at::Tensor order = layer.positions.argsort(/*stable=*/false, /*dim=*/-1);
  return at::empty_like(votes).scatter_(-1, order, pool(votes.gather(-1, order)));
}

void SelectiveKVCache::after_attention(int64_t layer_index, const at::Tensor& queries, const at::Tensor& positions) {
  Layer& layer = layers_.at(layer_index);
  const SelectiveLayerOptions& options = layer.options;
  const bool first_step = !layer.prompt_done;
  layer.prompt_done = true;
  at::Tensor token_scores;
  switch (options.score) {
    case TokenScore::kNone:  // the oldest token outside the sink and the recent window goes first
      if (layer.keys.size(2) > options.budget_tokens) token_scores = layer.positions.to(at::kFloat);
      break;
    case TokenScore::kAccumulatedAttention:
      layer.scores.add_(received(layer, queries, positions));  // in place: a view of the store once stored
      token_scores = layer.scores;
      break;
    case TokenScore::kPromptAttention:
      if (first_step) token_scores = received(layer, queries, positions);
      break;
    case TokenScore::kExpectedAttention:
      if (first_step)
        token_scores = expected_attention_scores(queries, positions, layer.keys, layer.values, layer.positions,
                                                 inv_freq_, options.expected);
      break;
    case TokenScore::kNewestQueryAttention: {
      // Only the present query counts: a token ignored now goes, however much it was attended to before.
      const int64_t newest = queries.size(2) - 1;
      token_scores = received(layer, queries.narrow(2, newest, 1), positions.narrow(1, newest, 1));
      break;
    }
    case TokenScore::kObservationWindow: {
      // Chosen once from the prompt's last queries, or, evicting while decoding, again at every step from the newest
      // `observation_window` queries (the prompt's last ones first, then the generated tokens').
      if (!first_step && !options.evict_during_decode) break;
      const int64_t window = std::min<int64_t>(options.observation_window, queries.size(2));
      const int64_t start = queries.size(2) - window;
      at::Tensor newest = queries.narrow(2, start, window), newest_positions = positions.narrow(1, start, window);
      if (options.evict_during_decode) {
        if (!first_step) {
          newest = at::cat({layer.window_queries, newest}, 2);
          newest_positions = at::cat({layer.window_positions, newest_positions}, 1);
          const int64_t kept = std::min<int64_t>(options.observation_window, newest.size(2));
          newest = newest.narrow(2, newest.size(2) - kept, kept);
          newest_positions = newest_positions.narrow(1, newest_positions.size(1) - kept, kept);
        }
        // In place once the window is full, so a captured decode step reads and writes the same buffers every time.
        if (layer.window_queries.defined() && layer.window_queries.sizes() == newest.sizes()) {
          layer.window_queries.copy_(newest);
          layer.window_positions.copy_(newest_positions);
        } else {
          layer.window_queries = newest.contiguous();
          layer.window_positions = newest_positions.contiguous();
        }
      }
      token_scores = pooled_votes(layer, newest, newest_positions);
      break;
    }
  }
  const bool may_evict = first_step || options.evict_during_decode;
  const int64_t excess = layer.keys.size(2) - options.budget_tokens;
  if (may_evict && token_scores.defined() && excess > 0) {
    if (options.shared_selection) token_scores = token_scores.mean(1, /*keepdim=*/true).expand_as(token_scores);
    if (excess == 1 && !layer.pending)
      evict_one_in_place(layer, token_scores);
    else
      evict(layer, token_scores);
  }
  if (layer.pending)
    store(layer, layer.keys, layer.values, layer.positions, layer.scores, decode_room(layer, layer.keys.size(2)));
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
  const int64_t slots = layer.length, excess = slots - allowed;
  if (excess <= 0) return;
  const int64_t index = std::clamp(layer.prompt_kept - options.decode_protected_tokens, options.sink_tokens,
                                   std::max<int64_t>(slots - excess, 0));
  // The slots after the removed ones move up, in place: only the protected tail and the tokens generated since.
  const int64_t tail = slots - index - excess;
  for (at::Tensor* store : {&layer.key_store, &layer.value_store, &layer.position_store, &layer.score_store})
    if (tail > 0) store->narrow(2, index, tail).copy_(store->narrow(2, index + excess, tail).clone());
  layer.length = slots - excess;
  refresh_views(layer);
}

at::Tensor SelectiveKVCache::ranking(const Layer& layer, const at::Tensor& token_scores) const {
  const SelectiveLayerOptions& options = layer.options;
  const at::Tensor& positions = layer.positions;  // [batch, kv_heads, slots]
  at::Tensor newest = std::get<0>(positions.max(-1, /*keepdim=*/true));
  at::Tensor kept =
      (positions >= 0) & ((positions < options.sink_tokens) | (positions > newest - options.recent_tokens));
  const double infinity = std::numeric_limits<double>::infinity();
  return token_scores.to(at::kFloat).masked_fill(kept, infinity).masked_fill(positions < 0, -infinity);
}

void SelectiveKVCache::evict(Layer& layer, const at::Tensor& token_scores) {
  // Slot order is kept (sorted indices), so the cache stays in position order for every head.
  at::Tensor chosen =
      std::get<0>(std::get<1>(ranking(layer, token_scores).topk(layer.options.budget_tokens, -1)).sort(-1));
  at::Tensor chosen_rows = chosen.unsqueeze(-1).expand({-1, -1, -1, layer.keys.size(3)});
  at::Tensor keys = layer.keys.gather(2, chosen_rows), values = layer.values.gather(2, chosen_rows);
  at::Tensor positions = layer.positions.gather(2, chosen), scores = layer.scores.gather(2, chosen);
  if (layer.pending) {  // store() copies them once the step is done
    layer.keys = keys, layer.values = values, layer.positions = positions, layer.scores = scores;
  } else {
    store(layer, keys, values, positions, scores, decode_room(layer, keys.size(2)));
  }
}

bool SelectiveKVCache::replaces_before_attention(const Layer& layer) {
  const SelectiveLayerOptions& options = layer.options;
  return options.score == TokenScore::kNone && options.streaming_mask && options.evict_during_decode &&
         options.budget_tokens == options.sink_tokens + options.recent_tokens;
}

void SelectiveKVCache::replace_oldest(Layer& layer, const at::Tensor& keys, const at::Tensor& values,
                                      const at::Tensor& positions) {
  // StreamingLLM's full layer holds the sinks and the `recent` newest tokens; the one the new token displaces (an empty
  // slot, else the oldest past the sinks) is outside the step's window, so writing over it before attention is what
  // appending, attending and then evicting gives, in a fifth of the launches. A finished sequence (position -1)
  // overwrites a token too, but its outputs are thrown away.
  const SelectiveLayerOptions& options = layer.options;
  const int64_t batch = keys.size(0), kv_heads = keys.size(1), head_dim = keys.size(3);
  const at::Tensor& held = layer.positions;  // [batch, kv_heads, budget]
  const at::Tensor sink = (held >= 0) & (held < options.sink_tokens);
  const at::Tensor victim =
      std::get<1>(at::where(sink, std::numeric_limits<int64_t>::max(), held).min(-1, /*keepdim=*/true));
  const at::Tensor rows = victim.unsqueeze(-1).expand({batch, kv_heads, 1, head_dim});
  layer.key_store.scatter_(2, rows, keys);
  layer.value_store.scatter_(2, rows, values);
  layer.position_store.scatter_(2, victim, positions);
}

void SelectiveKVCache::evict_one_in_place(Layer& layer, const at::Tensor& token_scores) {
  // Each head's lowest-ranked slot takes the newest slot's contents (a no-op where they are the same slot), then the
  // newest slot is dropped: one token's bytes move per head.
  const int64_t batch = layer.keys.size(0), kv_heads = layer.keys.size(1), head_dim = layer.keys.size(3);
  const int64_t last = layer.length - 1;
  const at::Tensor victim = std::get<1>(ranking(layer, token_scores).min(-1, /*keepdim=*/true));  // [b, h, 1]
  const at::Tensor rows = victim.unsqueeze(-1).expand({batch, kv_heads, 1, head_dim});
  layer.key_store.scatter_(2, rows, layer.key_store.narrow(2, last, 1).clone());
  layer.value_store.scatter_(2, rows, layer.value_store.narrow(2, last, 1).clone());
  layer.position_store.scatter_(2, victim, layer.position_store.narrow(2, last, 1).clone());
  layer.score_store.scatter_(2, victim, layer.score_store.narrow(2, last, 1).clone());
  layer.position_store.narrow(2, last, 1).fill_(-1);
  layer.length = last;
  refresh_views(layer);
}

SelectiveKVCache::FixedShapeKind SelectiveKVCache::fixed_shape_kind(const Layer& layer) {
  const SelectiveLayerOptions& options = layer.options;
  if (!layer.prompt_done || layer.pending || options.decode_keep_fraction > 0) return FixedShapeKind::kNone;
  if (options.evict_during_decode)
    return layer.length == options.budget_tokens ? FixedShapeKind::kEvictingAtBudget : FixedShapeKind::kNone;
  // Growing: only scores that are done with once the prompt is in (the stores are not re-ranked while decoding).
  const bool prompt_only = options.score == TokenScore::kNone || options.score == TokenScore::kObservationWindow ||
                           options.score == TokenScore::kPromptAttention ||
                           options.score == TokenScore::kExpectedAttention;
  return prompt_only ? FixedShapeKind::kGrowing : FixedShapeKind::kNone;
}

bool SelectiveKVCache::begin_fixed_shape_decode(int64_t steps) {
  for (const Layer& layer : layers_)
    if (fixed_shape_kind(layer) == FixedShapeKind::kNone) return false;
  for (Layer& layer : layers_) {
    if (fixed_shape_kind(layer) != FixedShapeKind::kGrowing) continue;
    reserve(layer, layer.length + steps);
    // Every step reads the slots still to come, masked by position -1: zeros, as FullKVCache's.
    const int64_t unfilled = layer.key_store.size(2) - layer.length;
    layer.key_store.narrow(2, layer.length, unfilled).zero_();
    layer.value_store.narrow(2, layer.length, unfilled).zero_();
    layer.position_store.narrow(2, layer.length, unfilled).fill_(-1);
    layer.score_store.narrow(2, layer.length, unfilled).zero_();
    layer.next_slot = at::full({1}, layer.length, layer.position_store.options());
  }
  fixed_shape_ = true;
  return true;
}

void SelectiveKVCache::fixed_shape_step_done() {
  for (Layer& layer : layers_) {
    ++layer.decode_tokens;
    if (!layer.next_slot.defined()) continue;
    ++layer.length;
    refresh_views(layer);
  }
}

int64_t SelectiveKVCache::bytes() const {
  int64_t total = 0;
  for (const Layer& layer : layers_)
    total += layer.pending ? layer.keys.nbytes() + layer.values.nbytes()
                           : layer.key_store.nbytes() + layer.value_store.nbytes();
  return total;
}

}  // namespace kvforge
