#include "runtime/mixed_head_kv_cache.h"

#include <algorithm>

namespace kvforge {
namespace {

// `tensor` with dimension `dim` padded to `size` by `fill`.
at::Tensor pad_to(const at::Tensor& tensor, int64_t dim, int64_t size, double fill) {
  if (tensor.size(dim) == size) return tensor;
  std::vector<int64_t> shape = tensor.sizes().vec();
  shape[dim] = size - tensor.size(dim);
  return at::cat({tensor, at::full(shape, fill, tensor.options())}, dim);
}

}  // namespace

MixedHeadKVCache::MixedHeadKVCache(const std::vector<std::vector<bool>>& streaming_heads, int64_t sink_tokens,
                                   int64_t recent_tokens, int64_t batch, int64_t head_dim, int64_t capacity,
                                   const at::TensorOptions& options)
    : sink_tokens_(sink_tokens), recent_tokens_(recent_tokens), kv_heads_(0) {
  for (const std::vector<bool>& heads : streaming_heads) {
    kv_heads_ = static_cast<int64_t>(heads.size());
    std::vector<int64_t> full, streaming;
    for (int64_t head = 0; head < kv_heads_; ++head) (heads[head] ? streaming : full).push_back(head);
    Layer layer;
    const at::TensorOptions indices = at::TensorOptions().dtype(at::kLong).device(options.device());
    layer.full_heads = at::tensor(full, at::kLong).to(indices);
    layer.streaming_heads = at::tensor(streaming, at::kLong).to(indices);
    layer.streaming_mask = at::zeros({kv_heads_}, indices.dtype(at::kBool));
    if (!streaming.empty()) layer.streaming_mask.index_fill_(0, layer.streaming_heads, true);
    if (!full.empty())
      layer.full =
          std::make_unique<FullKVCache>(1, batch, static_cast<int64_t>(full.size()), head_dim, capacity, options);
    const auto count = static_cast<int64_t>(streaming.size());
    layer.keys = at::empty({batch, count, 0, head_dim}, options);
    layer.values = at::empty({batch, count, 0, head_dim}, options);
    layer.positions = at::empty({batch, 0}, indices);
    layers_.push_back(std::move(layer));
  }
}

CachedKV MixedHeadKVCache::update(int64_t layer_index, const at::Tensor& keys, const at::Tensor& values,
                                  const at::Tensor& positions) {
  Layer& layer = layers_.at(layer_index);
  const bool any_streaming = layer.streaming_heads.numel() > 0;
  CachedKV full;
  if (layer.full) {
    full = layer.full->update(0, keys.index_select(1, layer.full_heads), values.index_select(1, layer.full_heads),
                              positions);
    if (!any_streaming) return full;  // every head full: exactly the full cache
  }
  // Decoding one token: the newest query sees the sinks and its recent−1 predecessors only, so dropping the
  // rest first leaves every held slot visible and the step needs no window (the decode kernel then applies).
  const bool decode_step = keys.size(2) == 1;
  if (decode_step) keep_window(layer, recent_tokens_ - 1);
  layer.keys = at::cat({layer.keys, keys.index_select(1, layer.streaming_heads)}, 2);
  layer.values = at::cat({layer.values, values.index_select(1, layer.streaming_heads)}, 2);
  layer.positions = at::cat({layer.positions, positions}, 1);
  // One per-head view: [batch, kv_heads, slots, head_dim], each head's own slots first, -1 after them.
  const int64_t batch = keys.size(0), head_dim = keys.size(3);
  const int64_t slots = std::max(layer.full ? full.keys.size(2) : 0, layer.keys.size(2));
  CachedKV kv;
  kv.keys = at::zeros({batch, kv_heads_, slots, head_dim}, keys.options());
  kv.values = at::zeros({batch, kv_heads_, slots, head_dim}, values.options());
  kv.positions = at::full({batch, kv_heads_, slots}, -1, positions.options());
  auto place = [&](const at::Tensor& heads, const at::Tensor& k, const at::Tensor& v, const at::Tensor& p) {
    kv.keys.index_copy_(1, heads, pad_to(k, 2, slots, 0));
    kv.values.index_copy_(1, heads, pad_to(v, 2, slots, 0));
    kv.positions.index_copy_(1, heads,
                             pad_to(p, 1, slots, -1).unsqueeze(1).expand({-1, heads.numel(), -1}).contiguous());
  };
  if (layer.full) place(layer.full_heads, full.keys, full.values, full.positions);
  place(layer.streaming_heads, layer.keys, layer.values, layer.positions);
  if (!decode_step) {  // a prompt chunk: each query needs its own window
    kv.sink_tokens = sink_tokens_;
    kv.window_tokens = recent_tokens_;
    kv.streaming_heads = layer.streaming_mask;
  }
  return kv;
}

void MixedHeadKVCache::after_attention(int64_t layer_index, const at::Tensor&, const at::Tensor&) {
  keep_window(layers_.at(layer_index), recent_tokens_);
}

void MixedHeadKVCache::keep_window(Layer& layer, int64_t recent) const {
  const int64_t slots = layer.positions.size(1);
  if (layer.streaming_heads.numel() == 0 || slots <= sink_tokens_ + recent) return;
  // Keep, per sequence, the sink positions and the `recent` newest; sequences that keep fewer slots (short
  // or padded ones) are filled up with empty slots so the batch shares one slot count.
  const at::Tensor& positions = layer.positions;
  at::Tensor newest = std::get<0>(positions.max(1, /*keepdim=*/true));
  at::Tensor keep = (positions >= 0) & ((positions < sink_tokens_) | (positions > newest - recent));
  const int64_t kept = keep.sum(1).max().item<int64_t>();
  at::Tensor slot = at::arange(slots, positions.options());
  at::Tensor order = std::get<1>(at::where(keep, slot, slot + slots).sort(1));  // kept slots first, in order
  at::Tensor chosen = order.narrow(1, 0, kept);
  at::Tensor rows = chosen.view({chosen.size(0), 1, kept, 1}).expand({-1, layer.keys.size(1), -1, layer.keys.size(3)});
  layer.keys = layer.keys.gather(2, rows);
  layer.values = layer.values.gather(2, rows);
  layer.positions = positions.gather(1, chosen).masked_fill(keep.gather(1, chosen).logical_not(), -1);
}

int64_t MixedHeadKVCache::length(int64_t layer_index) const {
  const Layer& layer = layers_.at(layer_index);
  return std::max(layer.full ? layer.full->length(0) : 0, layer.positions.size(1));
}

int64_t MixedHeadKVCache::streaming_slots(int64_t layer_index) const {
  const Layer& layer = layers_.at(layer_index);
  return layer.streaming_heads.numel() > 0 ? layer.positions.size(1) : 0;
}

int64_t MixedHeadKVCache::bytes() const {
  int64_t total = 0;
  for (const Layer& layer : layers_)
    total += (layer.full ? layer.full->bytes() : 0) + layer.keys.nbytes() + layer.values.nbytes();
  return total;
}

}  // namespace kvforge
