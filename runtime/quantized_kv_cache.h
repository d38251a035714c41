#pragma once
// A KIVI-style quantized KV cache: keys quantized per channel (each channel of a group of
// `group_size` consecutive tokens shares a scale and a minimum), values per token (each run of
// `group_size` channels of one token shares them), asymmetric min-max to 2 or 4 bits, codes packed
// into bytes. The newest `residual_tokens` tokens stay in full precision; older ones are quantized a
// token group at a time as they leave that window, so with residual_tokens >= the sequence nothing is
// quantized and attention equals the full cache's.
//
// This is the reference layout: attention dequantizes the stored codes each step. The CUDA path
// dequantizes inside the attention kernel instead.
#include <ATen/ATen.h>

#include <vector>

#include "runtime/kv_cache.h"

namespace kvforge {

struct QuantizedCacheOptions {
  int64_t bits = 4;              // 2 or 4
  int64_t group_size = 32;       // tokens per key group, channels per value group (divides head_dim)
  int64_t residual_tokens = 32;  // newest tokens kept in full precision
};

// Codes in [0, 2^bits - 1] packed along the last dimension (8 / bits per byte), with the scale and
// minimum of each quantization group in float16 (dequantized = code * scale + minimum).
struct QuantizedBlock {
  at::Tensor codes;  // packed: [..., last / (8 / bits)] uint8
  at::Tensor scale;  // float16, `dim` reduced to 1 (keys) or grouped (values)
  at::Tensor minimum;
};

class QuantizedKVCache : public KVCache {
 public:
  QuantizedKVCache(int64_t num_layers, int64_t batch, int64_t kv_heads, int64_t head_dim,
                   const QuantizedCacheOptions& quantization, const at::TensorOptions& options);

  CachedKV update(int64_t layer, const at::Tensor& keys, const at::Tensor& values,
                  const at::Tensor& positions) override;
  void after_attention(int64_t layer, const at::Tensor& queries, const at::Tensor& positions) override;
  int64_t length(int64_t layer) const override;
  int64_t bytes() const override;

  int64_t quantized_tokens(int64_t layer) const { return layers_.at(layer).quantized_tokens; }

 private:
  struct Layer {
    QuantizedBlock keys;    // codes [batch, kv_heads, groups, group, packed]: the quantized tokens' keys
    QuantizedBlock values;  // codes [batch, kv_heads, quantized, packed]; scale [.., quantized, groups]
    int64_t quantized_tokens = 0;
    at::Tensor recent_keys;  // [batch, kv_heads, recent, head_dim] full precision
    at::Tensor recent_values;
    at::Tensor positions;  // [batch, quantized + recent]
  };
  at::Tensor dequantized_keys(const Layer& layer) const;
  at::Tensor dequantized_values(const Layer& layer) const;

  QuantizedCacheOptions quantization_;
  at::ScalarType dtype_;
  std::vector<Layer> layers_;
};

// Exposed for tests. Keys: groups of tokens [..., group, head_dim], a scale per channel of each group.
// Values: [batch, kv_heads, tokens, head_dim], a scale per token and run of group_size channels.
QuantizedBlock quantize_keys_per_channel(const at::Tensor& keys, int64_t bits);  // keys: [..., group, d]
QuantizedBlock quantize_values_per_token(const at::Tensor& values, int64_t bits, int64_t group_size);  // [b, h, t, d]
at::Tensor dequantize_keys_per_channel(const QuantizedBlock& block, int64_t bits, at::ScalarType dtype);
at::Tensor dequantize_values_per_token(const QuantizedBlock& block, int64_t bits, int64_t group_size,
                                       at::ScalarType dtype);

}  // namespace kvforge
