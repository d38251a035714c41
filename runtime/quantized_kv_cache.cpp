#include "runtime/quantized_kv_cache.h"

#include <stdexcept>
#include <string>
#include <vector>

namespace kvforge {
namespace {

constexpr double kSmallestScale = 1e-8;  // a constant slice quantizes to code 0 and dequantizes exactly

int64_t levels(int64_t bits) { return (int64_t{1} << bits) - 1; }

// codes: [..., n] integral in [0, 2^bits) → [..., n * bits / 8] uint8, lowest code in the lowest bits.
at::Tensor pack(const at::Tensor& codes, int64_t bits) {
  const int64_t per_byte = 8 / bits;
  std::vector<int64_t> shape = codes.sizes().vec();
  shape.back() /= per_byte;
  shape.push_back(per_byte);
  at::Tensor shifts = at::pow(2, at::arange(per_byte, codes.options().dtype(at::kInt)) * bits);
  return (codes.to(at::kInt).reshape(shape) * shifts).sum(-1).to(at::kByte);
}

at::Tensor unpack(const at::Tensor& packed, int64_t bits) {
  const int64_t per_byte = 8 / bits;
  at::Tensor shifts = at::pow(2, at::arange(per_byte, packed.options().dtype(at::kInt)) * bits);
  std::vector<int64_t> shape = packed.sizes().vec();
  shape.back() *= per_byte;
  return at::div(packed.to(at::kInt).unsqueeze(-1), shifts, "floor").remainder(levels(bits) + 1).reshape(shape);
}

// Min-max quantization of x reduced over `dim` (kept as size 1); scale and minimum are rounded to
// float16 before the codes are computed, so dequantization uses exactly what is stored.
QuantizedBlock quantize_over(const at::Tensor& x, int64_t dim, int64_t bits) {
  at::Tensor values = x.to(at::kFloat);
  at::Tensor minimum = values.amin(dim, /*keepdim=*/true).to(at::kHalf);
  at::Tensor scale = ((values.amax(dim, /*keepdim=*/true) - minimum.to(at::kFloat)) / levels(bits)).to(at::kHalf);
  scale = scale.clamp_min(kSmallestScale).to(at::kHalf);
  at::Tensor codes = at::round((values - minimum.to(at::kFloat)) / scale.to(at::kFloat)).clamp(0, levels(bits));
  return {codes, scale, minimum};
}

}  // namespace

QuantizedBlock quantize_keys_per_channel(const at::Tensor& keys, int64_t bits) {
  QuantizedBlock block = quantize_over(keys, /*dim=*/2, bits);
  block.codes = pack(block.codes, bits);
  return block;
}

QuantizedBlock quantize_values_per_token(const at::Tensor& values, int64_t bits, int64_t group_size) {
  std::vector<int64_t> grouped = values.sizes().vec();
  grouped.back() /= group_size;
  grouped.push_back(group_size);
  QuantizedBlock block = quantize_over(values.reshape(grouped), /*dim=*/-1, bits);
  block.codes = pack(block.codes.reshape(values.sizes()), bits);
  block.scale = block.scale.squeeze(-1);
  block.minimum = block.minimum.squeeze(-1);
  return block;
}

at::Tensor dequantize_keys_per_channel(const QuantizedBlock& block, int64_t bits, at::ScalarType dtype) {
  return (unpack(block.codes, bits).to(at::kFloat) * block.scale.to(at::kFloat) + block.minimum.to(at::kFloat))
      .to(dtype);
}

at::Tensor dequantize_values_per_token(const QuantizedBlock& block, int64_t bits, int64_t group_size,
                                       at::ScalarType dtype) {
  at::Tensor codes = unpack(block.codes, bits).to(at::kFloat);
  std::vector<int64_t> grouped = codes.sizes().vec();
  grouped.back() /= group_size;
  grouped.push_back(group_size);
  at::Tensor values =
      codes.reshape(grouped) * block.scale.to(at::kFloat).unsqueeze(-1) + block.minimum.to(at::kFloat).unsqueeze(-1);
  return values.reshape(codes.sizes()).to(dtype);
}

QuantizedKVCache::QuantizedKVCache(int64_t num_layers, int64_t batch, int64_t kv_heads, int64_t head_dim,
                                   const QuantizedCacheOptions& quantization, const at::TensorOptions& options)
    : quantization_(quantization), dtype_(options.dtype().toScalarType()) {
  if (quantization.bits != 2 && quantization.bits != 4)
    throw std::invalid_argument("bits: expected 2 or 4, got " + std::to_string(quantization.bits));
  if (quantization.group_size < 1 || head_dim % quantization.group_size != 0)
    throw std::invalid_argument("group_size " + std::to_string(quantization.group_size) + " must divide head_dim " +
                                std::to_string(head_dim));
  if (quantization.residual_tokens < 0) throw std::invalid_argument("residual_tokens: expected >= 0");
  layers_.resize(num_layers);
  for (Layer& layer : layers_) {
    layer.recent_keys = at::empty({batch, kv_heads, 0, head_dim}, options);
    layer.recent_values = at::empty({batch, kv_heads, 0, head_dim}, options);
    layer.positions = at::empty({batch, 0}, options.dtype(at::kLong));
  }
}

at::Tensor QuantizedKVCache::dequantized_keys(const Layer& layer) const {
  std::vector<at::Tensor> parts;
  for (const QuantizedBlock& group : layer.key_groups)
    parts.push_back(dequantize_keys_per_channel(group, quantization_.bits, dtype_));
  parts.push_back(layer.recent_keys);
  return at::cat(parts, 2);
}

at::Tensor QuantizedKVCache::dequantized_values(const Layer& layer) const {
  if (layer.quantized_tokens == 0) return layer.recent_values;
  return at::cat({dequantize_values_per_token(layer.values, quantization_.bits, quantization_.group_size, dtype_),
                  layer.recent_values},
                 2);
}

CachedKV QuantizedKVCache::update(int64_t layer_index, const at::Tensor& keys, const at::Tensor& values,
                                  const at::Tensor& positions) {
  Layer& layer = layers_.at(layer_index);
  layer.recent_keys = at::cat({layer.recent_keys, keys}, 2);
  layer.recent_values = at::cat({layer.recent_values, values}, 2);
  layer.positions = at::cat({layer.positions, positions}, 1);
  return {dequantized_keys(layer), dequantized_values(layer), layer.positions};
}

void QuantizedKVCache::after_attention(int64_t layer_index, const at::Tensor& /*queries*/,
                                       const at::Tensor& /*positions*/) {
  Layer& layer = layers_.at(layer_index);
  const int64_t group = quantization_.group_size, bits = quantization_.bits;
  // Tokens leave the full-precision window a whole key group at a time (keys share scales per group).
  while (layer.recent_keys.size(2) - group >= quantization_.residual_tokens) {
    layer.key_groups.push_back(quantize_keys_per_channel(layer.recent_keys.narrow(2, 0, group), bits));
    QuantizedBlock values = quantize_values_per_token(layer.recent_values.narrow(2, 0, group), bits, group);
    if (layer.quantized_tokens == 0) {
      layer.values = values;
    } else {
      layer.values.codes = at::cat({layer.values.codes, values.codes}, 2);
      layer.values.scale = at::cat({layer.values.scale, values.scale}, 2);
      layer.values.minimum = at::cat({layer.values.minimum, values.minimum}, 2);
    }
    layer.quantized_tokens += group;
    // clone: a narrowed view would keep the quantized tokens' full-precision storage alive
    layer.recent_keys = layer.recent_keys.narrow(2, group, layer.recent_keys.size(2) - group).clone();
    layer.recent_values = layer.recent_values.narrow(2, group, layer.recent_values.size(2) - group).clone();
  }
}

int64_t QuantizedKVCache::length(int64_t layer) const {
  return layers_.at(layer).quantized_tokens + layers_.at(layer).recent_keys.size(2);
}

int64_t QuantizedKVCache::bytes() const {
  auto block_bytes = [](const QuantizedBlock& block) {
    return block.codes.defined() ? block.codes.nbytes() + block.scale.nbytes() + block.minimum.nbytes() : 0;
  };
  int64_t total = 0;
  for (const Layer& layer : layers_) {
    for (const QuantizedBlock& group : layer.key_groups) total += block_bytes(group);
    total += block_bytes(layer.values) + layer.recent_keys.nbytes() + layer.recent_values.nbytes();
  }
  return total;
}

}  // namespace kvforge
