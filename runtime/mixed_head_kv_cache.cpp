#include "runtime/mixed_head_kv_cache.h"

#include <stdexcept>
#include <string>
#include <tuple>

namespace kvforge {

MixedHeadKVCache::MixedHeadKVCache(const std::vector<std::vector<bool>>& streaming_heads, int64_t sink_tokens,
                                   int64_t recent_tokens, int64_t batch, int64_t head_dim, int64_t capacity,
                                   const at::TensorOptions& options, int64_t decode_query_heads)
    : sink_tokens_(sink_tokens), recent_tokens_(recent_tokens), decode_query_heads_(decode_query_heads) {
  if (sink_tokens < 0 || recent_tokens < 1)
    throw std::invalid_argument("MixedHeadKVCache: streaming heads need sink >= 0 and recent >= 1 tokens, got sink " +
                                std::to_string(sink_tokens) + ", recent " + std::to_string(recent_tokens));
  const at::TensorOptions indices = at::TensorOptions().dtype(at::kLong).device(options.device());
  for (const std::vector<bool>& heads : streaming_heads) {
    Layer layer;
    for (int64_t head = 0; head < static_cast<int64_t>(heads.size()); ++head)
      (heads[head] ? layer.streaming_list : layer.full_list).push_back(head);
    layer.full_heads = at::tensor(layer.full_list, at::kLong).to(indices);
    layer.streaming_heads = at::tensor(layer.streaming_list, at::kLong).to(indices);
    if (!layer.full_list.empty())
      layer.full = std::make_unique<FullKVCache>(1, batch, static_cast<int64_t>(layer.full_list.size()), head_dim,
                                                 capacity, options);
    // Zeros, not garbage: the masked torch path multiplies empty slots' values by a zero weight.
    const auto count = static_cast<int64_t>(layer.streaming_list.size());
    const int64_t ring = count > 0 ? sink_tokens + recent_tokens : 0;
    layer.keys = at::zeros({batch, count, ring, head_dim}, options);
    layer.values = at::zeros({batch, count, ring, head_dim}, options);
    layer.positions = at::full({batch, ring}, -1, indices);
    layers_.push_back(std::move(layer));
  }
}

at::Tensor MixedHeadKVCache::ring_slots(const at::Tensor& positions) const {
  return at::where(positions < sink_tokens_, positions, sink_tokens_ + (positions - sink_tokens_) % recent_tokens_);
}

CachedKV MixedHeadKVCache::update(int64_t layer_index, const at::Tensor& keys, const at::Tensor& values,
                                  const at::Tensor& positions) {
  Layer& layer = layers_.at(layer_index);
  CachedKV full;
  if (layer.full) {
    full = layer.full->update(0, keys.index_select(1, layer.full_heads), values.index_select(1, layer.full_heads),
                              positions);
    if (layer.streaming_list.empty()) return full;  // every head full: exactly the full cache
  }
  const at::Tensor streaming_keys = keys.index_select(1, layer.streaming_heads);
  const at::Tensor streaming_values = values.index_select(1, layer.streaming_heads);
  auto parts = std::make_shared<kernels::DecodeHeadParts>();
  if (layer.full) parts->push_back({full.keys, full.values, full.positions, layer.full_list});
  CachedKV kv;
  kv.streaming_part = static_cast<int64_t>(parts->size());
  if (keys.size(2) > 1) {
    // A prompt chunk: its queries see the ring and the chunk through the sink + window rule; the tokens that stay go
    // into the ring once they have attended (after_attention).
    layer.chunk_keys = streaming_keys;
    layer.chunk_values = streaming_values;
    layer.chunk_positions = positions;
    parts->push_back({at::cat({layer.keys, streaming_keys}, 2), at::cat({layer.values, streaming_values}, 2),
                      at::cat({layer.positions, positions}, 1), layer.streaming_list});
    kv.sink_tokens = sink_tokens_;
    kv.window_tokens = recent_tokens_;
  } else {
    // Decoding one token: it replaces the token that left the window, in place, so the ring holds exactly the sinks
    // and the `recent` newest tokens and every held slot is visible (no window). Finished sequences step at position
    // -1: their ring stays as it is.
    const int64_t batch = keys.size(0), streaming = streaming_keys.size(1), head_dim = keys.size(3);
    const at::Tensor stepping = positions >= 0;
    const at::Tensor slots = ring_slots(positions.clamp_min(0));  // [batch, 1]
    const at::Tensor rows = slots.view({batch, 1, 1, 1}).expand({batch, streaming, 1, head_dim});
    const at::Tensor stepping_rows = stepping.view({batch, 1, 1, 1});
    layer.keys.scatter_(2, rows, at::where(stepping_rows, streaming_keys, layer.keys.gather(2, rows)));
    layer.values.scatter_(2, rows, at::where(stepping_rows, streaming_values, layer.values.gather(2, rows)));
    layer.positions.scatter_(1, slots, at::where(stepping, positions, layer.positions.gather(1, slots)));
    parts->push_back({layer.keys, layer.values, layer.positions, layer.streaming_list});
    if (decode_query_heads_ > 0 && kernels::decode_by_head_supported(*parts, decode_query_heads_)) {
      // A replayed graph calls no update(): fixed-shape steps are counted as they are reported done.
      if (fixed_shape_)
        layer.decodes_by_kernel = true;
      else
        ++kernel_steps_;
    }
  }
  kv.head_parts = std::move(parts);
  return kv;
}

void MixedHeadKVCache::after_attention(int64_t layer_index, const at::Tensor&, const at::Tensor&) {
  Layer& layer = layers_.at(layer_index);
  if (!layer.chunk_positions.defined()) return;
  write_chunk(layer);
  layer.chunk_keys = layer.chunk_values = layer.chunk_positions = at::Tensor();
}

void MixedHeadKVCache::write_chunk(Layer& layer) const {
  const at::Tensor& positions = layer.chunk_positions;  // [batch, tokens], -1 = padding
  const int64_t batch = positions.size(0), tokens = positions.size(1), ring = layer.positions.size(1);
  // The chunk is newer than the ring: its sinks and its `recent` newest stay, and those land in distinct slots.
  const at::Tensor newest = std::get<0>(positions.max(1, /*keepdim=*/true));
  const at::Tensor stays = (positions >= 0) & ((positions < sink_tokens_) | (positions > newest - recent_tokens_));
  // For each ring slot, the chunk token written there (-1: none); tokens that go send their index to a spare column.
  at::Tensor source = at::full({batch, ring + 1}, -1, positions.options());
  source.scatter_(1, at::where(stays, ring_slots(positions.clamp_min(0)), ring),
                  at::arange(tokens, positions.options()).expand({batch, tokens}));
  source = source.narrow(1, 0, ring);
  const at::Tensor written = source >= 0, token = source.clamp_min(0);
  layer.positions = at::where(written, positions.gather(1, token), layer.positions);
  const int64_t streaming = layer.keys.size(1), head_dim = layer.keys.size(3);
  const at::Tensor rows = token.view({batch, 1, ring, 1}).expand({batch, streaming, ring, head_dim});
  const at::Tensor written_rows = written.view({batch, 1, ring, 1});
  layer.keys = at::where(written_rows, layer.chunk_keys.gather(2, rows), layer.keys);
  layer.values = at::where(written_rows, layer.chunk_values.gather(2, rows), layer.values);
}

bool MixedHeadKVCache::begin_fixed_shape_decode(int64_t steps) {
  for (Layer& layer : layers_)
    if (layer.full && !layer.full->begin_fixed_shape_decode(steps)) return false;
  fixed_shape_ = true;
  return true;
}

void MixedHeadKVCache::fixed_shape_step_done() {
  for (Layer& layer : layers_) {
    if (layer.full) layer.full->fixed_shape_step_done();
    if (layer.decodes_by_kernel) ++kernel_steps_;
  }
}

int64_t MixedHeadKVCache::length(int64_t layer_index) const {
  const Layer& layer = layers_.at(layer_index);
  return layer.full ? layer.full->length(0) : layer.positions.size(1);
}

int64_t MixedHeadKVCache::streaming_slots(int64_t layer_index) const {
  return layers_.at(layer_index).positions.size(1);
}

int64_t MixedHeadKVCache::bytes() const {
  int64_t total = 0;
  for (const Layer& layer : layers_)
    total += (layer.full ? layer.full->bytes() : 0) + layer.keys.nbytes() + layer.values.nbytes();
  return total;
}

}  // namespace kvforge
