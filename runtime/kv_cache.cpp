#include "runtime/kv_cache.h"

#include <algorithm>
#include <stdexcept>

namespace kvforge {

FullKVCache::FullKVCache(int64_t num_layers, int64_t batch, int64_t kv_heads, int64_t head_dim,
                         int64_t initial_capacity, const at::TensorOptions& options) {
  const int64_t capacity = std::max<int64_t>(initial_capacity, 1);
  layers_.resize(num_layers);
  for (Layer& layer : layers_) {
    layer.keys = at::empty({batch, kv_heads, capacity, head_dim}, options);
    layer.values = at::empty({batch, kv_heads, capacity, head_dim}, options);
    layer.positions = at::full({batch, capacity}, -1, options.dtype(at::kLong));
  }
}

void FullKVCache::grow(Layer& layer, int64_t needed) {
  int64_t capacity = layer.keys.size(2);
  if (needed <= capacity) return;
  const int64_t new_capacity = std::max(needed, 2 * capacity);
  auto enlarge = [&](const at::Tensor& old, int64_t dim, double fill) {
    std::vector<int64_t> shape = old.sizes().vec();
    shape[dim] = new_capacity;
    at::Tensor bigger = at::full(shape, fill, old.options());
    bigger.narrow(dim, 0, layer.length).copy_(old.narrow(dim, 0, layer.length));
    return bigger;
  };
  layer.keys = enlarge(layer.keys, 2, 0.0);
  layer.values = enlarge(layer.values, 2, 0.0);
  layer.positions = enlarge(layer.positions, 1, -1.0);
}

CachedKV FullKVCache::update(int64_t layer_index, const at::Tensor& keys, const at::Tensor& values,
                             const at::Tensor& positions) {
  Layer& layer = layers_.at(layer_index);
  const int64_t new_tokens = keys.size(2);
  if (next_slot_.defined()) {
    if (new_tokens != 1) throw std::logic_error("FullKVCache: a fixed-shape decode step takes one token");
    layer.keys.index_copy_(2, next_slot_, keys);
    layer.values.index_copy_(2, next_slot_, values);
    layer.positions.index_copy_(1, next_slot_, positions);
    if (layer_index + 1 == static_cast<int64_t>(layers_.size())) next_slot_.add_(1);
    return {layer.keys, layer.values, layer.positions};
  }
  grow(layer, layer.length + new_tokens);
  layer.keys.narrow(2, layer.length, new_tokens).copy_(keys);
  layer.values.narrow(2, layer.length, new_tokens).copy_(values);
  layer.positions.narrow(1, layer.length, new_tokens).copy_(positions);
  layer.length += new_tokens;
  return {layer.keys.narrow(2, 0, layer.length), layer.values.narrow(2, 0, layer.length),
          layer.positions.narrow(1, 0, layer.length)};
}

bool FullKVCache::begin_fixed_shape_decode(int64_t steps) {
  if (layers_.empty()) return false;
  const int64_t length = layers_.front().length;
  for (Layer& layer : layers_) {
    if (layer.length != length) return false;
    grow(layer, length + steps);
    // Every step reads the slots still to come too, masked by their position -1: zeros, so that a weight of 0 never
    // meets a NaN left in uninitialised memory (0 × NaN would reach the output).
    const int64_t unfilled = layer.keys.size(2) - length;
    layer.keys.narrow(2, length, unfilled).zero_();
    layer.values.narrow(2, length, unfilled).zero_();
    layer.positions.narrow(1, length, unfilled).fill_(-1);
  }
  next_slot_ = at::full({1}, length, layers_.front().positions.options());
  return true;
}

void FullKVCache::fixed_shape_step_done() {
  for (Layer& layer : layers_) ++layer.length;
}

int64_t FullKVCache::bytes() const {
  int64_t total = 0;
  for (const Layer& layer : layers_) total += layer.keys.nbytes() + layer.values.nbytes();
  return total;
}

}  // namespace kvforge
