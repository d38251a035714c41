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
  QuantizedBlock block = quantize_over(keys, /*dim=*/-2, bits);
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

kernels::QuantizedDecodeInputs quantized_decode_inputs(const QuantizedBlock& keys, const QuantizedBlock& values,
                                                       const at::Tensor& recent_keys, const at::Tensor& recent_values,
                                                       const at::Tensor& positions, int64_t bits, int64_t group) {
  kernels::QuantizedDecodeInputs inputs;
  inputs.bits = bits;
  inputs.group = group;
  inputs.key_codes = keys.codes;
  inputs.key_scale = keys.scale;
  inputs.key_minimum = keys.minimum;
  inputs.value_codes = values.codes;
  inputs.value_scale = values.scale;
  inputs.value_minimum = values.minimum;
  inputs.recent_keys = recent_keys;
  inputs.recent_values = recent_values;
  inputs.positions = positions;
  return inputs;
}

kernels::QuantizedDecodeInputs quantize_for_decode(const at::Tensor& keys, const at::Tensor& values,
                                                   const at::Tensor& positions, int64_t quantized, int64_t bits,
                                                   int64_t group) {
  QuantizedBlock key_block, value_block;
  if (quantized > 0) {
    const std::vector<int64_t> grouped{keys.size(0), keys.size(1), quantized / group, group, keys.size(3)};
    key_block = quantize_keys_per_channel(keys.narrow(2, 0, quantized).reshape(grouped), bits);
    value_block = quantize_values_per_token(values.narrow(2, 0, quantized), bits, group);
  }
  const int64_t recent = keys.size(2) - quantized;
  return quantized_decode_inputs(key_block, value_block, keys.narrow(2, quantized, recent).contiguous(),
                                 values.narrow(2, quantized, recent).contiguous(), positions, bits, group);
}

QuantizedKVCache::QuantizedKVCache(int64_t num_layers, int64_t batch, int64_t kv_heads, int64_t head_dim,
                                   const QuantizedCacheOptions& quantization, const at::TensorOptions& options,
                                   int64_t decode_query_heads)
    : quantization_(quantization), dtype_(options.dtype().toScalarType()), decode_query_heads_(decode_query_heads) {
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
  if (layer.quantized_tokens == 0) return layer.recent_keys;
  // codes [batch, kv_heads, groups, group, packed]: one dequantization for every group at once
  const at::Tensor keys = dequantize_keys_per_channel(layer.keys, quantization_.bits, dtype_);
  return at::cat({keys.flatten(2, 3), layer.recent_keys}, 2);
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
  if (keys.size(2) == 1 && decode_query_heads_ > 0 && layer.quantized_tokens > 0) {
    auto inputs = std::make_shared<kernels::QuantizedDecodeInputs>(
        quantized_decode_inputs(layer.keys, layer.values, layer.recent_keys, layer.recent_values, layer.positions,
                                quantization_.bits, quantization_.group_size));
    if (kernels::quantized_decode_supported(*inputs, decode_query_heads_)) {
      CachedKV kv{layer.recent_keys, layer.recent_values, layer.positions};
      kv.quantized = std::move(inputs);
      ++kernel_steps_;
      return kv;
    }
  }
  return {dequantized_keys(layer), dequantized_values(layer), layer.positions};
}

void QuantizedKVCache::after_attention(int64_t layer_index, const at::Tensor& /*queries*/,
                                       const at::Tensor& /*positions*/) {
  Layer& layer = layers_.at(layer_index);
  const int64_t group = quantization_.group_size, bits = quantization_.bits;
  // Tokens leave the full-precision window in whole key groups (keys share scales per group), all at once.
  const int64_t whole = std::max<int64_t>(0, layer.recent_keys.size(2) - quantization_.residual_tokens) / group * group;
  if (whole == 0) return;
  const at::Tensor leaving = layer.recent_keys.narrow(2, 0, whole);
  std::vector<int64_t> grouped = leaving.sizes().vec();  // [batch, kv_heads, groups, group, head_dim]
  grouped[2] = whole / group;
  grouped.insert(grouped.begin() + 3, group);
  QuantizedBlock keys = quantize_keys_per_channel(leaving.reshape(grouped), bits);
  QuantizedBlock values = quantize_values_per_token(layer.recent_values.narrow(2, 0, whole), bits, group);
  for (auto [store, more] : {std::pair{&layer.keys, &keys}, std::pair{&layer.values, &values}}) {
    store->codes = store->codes.defined() ? at::cat({store->codes, more->codes}, 2) : more->codes;
    store->scale = store->scale.defined() ? at::cat({store->scale, more->scale}, 2) : more->scale;
    store->minimum = store->minimum.defined() ? at::cat({store->minimum, more->minimum}, 2) : more->minimum;
  }
  layer.quantized_tokens += whole;
  // clone: a narrowed view would keep the quantized tokens' full-precision storage alive
  layer.recent_keys = layer.recent_keys.narrow(2, whole, layer.recent_keys.size(2) - whole).clone();
  layer.recent_values = layer.recent_values.narrow(2, whole, layer.recent_values.size(2) - whole).clone();
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
    total +=
        block_bytes(layer.keys) + block_bytes(layer.values) + layer.recent_keys.nbytes() + layer.recent_values.nbytes();
  }
  return total;
}

}  // namespace kvforge
