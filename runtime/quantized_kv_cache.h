#pragma once
// A KIVI-style quantized KV cache: keys quantized per channel (each channel of a group of
// `group_size` consecutive tokens shares a scale and a minimum), values per token (each run of
// `group_size` channels of one token shares them), asymmetric min-max to 2 or 4 bits, codes packed
// into bytes. The newest `residual_tokens` tokens stay in full precision; older ones are quantized a
// token group at a time as they leave that window, so with residual_tokens >= the sequence nothing is
// quantized and attention equals the full cache's.
//
// On the CPU, and for prefill, attention reads the codes dequantized in full each step. A CUDA decode step (one new
// token, bf16, decode_query_heads > 0) hands the codes to kernels::quantized_decode_attention instead, which
// dequantizes each row in registers: the full-precision copy of the cache is never made.
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
  // decode_query_heads: the model's query heads, so a decode step can use the kernel (0 = always dequantize; models
  // with sliding-window layers pass 0, as the kernel attends every held token).
  QuantizedKVCache(int64_t num_layers, int64_t batch, int64_t kv_heads, int64_t head_dim,
                   const QuantizedCacheOptions& quantization, const at::TensorOptions& options,
                   int64_t decode_query_heads = 0);

  CachedKV update(int64_t layer, const at::Tensor& keys, const at::Tensor& values,
                  const at::Tensor& positions) override;
  void after_attention(int64_t layer, const at::Tensor& queries, const at::Tensor& positions) override;
  int64_t length(int64_t layer) const override;
  int64_t bytes() const override;

  int64_t quantized_tokens(int64_t layer) const { return layers_.at(layer).quantized_tokens; }
  int64_t kernel_steps() const { return kernel_steps_; }  // layer steps handed to the decode kernel

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
  int64_t decode_query_heads_ = 0;
  int64_t kernel_steps_ = 0;
  std::vector<Layer> layers_;
};

// Exposed for tests. Keys: groups of tokens [..., group, head_dim], a scale per channel of each group.
// Values: [batch, kv_heads, tokens, head_dim], a scale per token and run of group_size channels.
QuantizedBlock quantize_keys_per_channel(const at::Tensor& keys, int64_t bits);  // keys: [..., group, d]
QuantizedBlock quantize_values_per_token(const at::Tensor& values, int64_t bits, int64_t group_size);  // [b, h, t, d]
at::Tensor dequantize_keys_per_channel(const QuantizedBlock& block, int64_t bits, at::ScalarType dtype);
at::Tensor dequantize_values_per_token(const QuantizedBlock& block, int64_t bits, int64_t group_size,
                                       at::ScalarType dtype);

// The decode kernel's view of a layer: `keys` / `values` quantized as above (keys grouped per `group` tokens), then
// the bf16 recent window; positions [batch, quantized + recent].
kernels::QuantizedDecodeInputs quantized_decode_inputs(const QuantizedBlock& keys, const QuantizedBlock& values,
                                                       const at::Tensor& recent_keys, const at::Tensor& recent_values,
                                                       const at::Tensor& positions, int64_t bits, int64_t group);

// Keys and values [batch, kv_heads, tokens, head_dim] quantized up to `quantized` tokens (a multiple of `group`), the
// rest kept as the recent window: the layout QuantizedKVCache holds, for benchmarks and tests.
kernels::QuantizedDecodeInputs quantize_for_decode(const at::Tensor& keys, const at::Tensor& values,
                                                   const at::Tensor& positions, int64_t quantized, int64_t bits,
                                                   int64_t group);

}  // namespace kvforge
