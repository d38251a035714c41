#pragma once
// CSKV's bi-branch cache. Every token's keys and values are stored as low-rank latents of the attention input
// (latent = x·Aᵀ, before RoPE, for the whole K and the whole V projection of a layer: all KV heads share one
// latent), and the newest `window` tokens are also kept exact. Attention sees the exact keys and values of the
// window and of the step's own tokens (so a prefill attends exactly), and older tokens rebuilt from their
// latents: keys = B·latent (+ the projection's bias) rotated at their true positions, values = B·latent.
//
// Latents are stored at `bits`: 16 keeps them in the model's dtype; 2, 4 or 8 packs codes into bytes with fp16
// scales and minimums, keys per latent channel over groups of `group` tokens (KIVI-style, so the newest
// partial group waits unquantized), values per token in runs of one KV head's latent width. bytes() counts the
// latents, the scales, the waiting group and the exact window: what the cache holds.
//
// Prefill and the CPU rebuild the old keys and values into temporaries each step; a one-token step on the GPU at
// 16 bits hands the latents to kernels::low_rank_decode_attention instead, which rebuilds keys tile by tile in
// shared memory and attends values in the latent space, so nothing the size of the full cache is written. The
// kernel has no key norm, so factors with a key_norm (Qwen3) rebuild on every step.
#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/kv_cache.h"
#include "runtime/quantized_kv_cache.h"

namespace kvforge {

// One layer's factors: K ≈ B_K·A_K·x (+ k_proj's bias), V ≈ B_V·A_V·x (+ v_proj's bias); for a model that
// normalises its keys per head before RoPE (Qwen3's k_norm), K is that norm of the product.
struct LowRankLayer {
  at::Tensor key_down;    // A_K [key_rank, hidden]
  at::Tensor key_up;      // B_K [kv_heads * head_dim, key_rank]
  at::Tensor value_down;  // A_V [value_rank, hidden]
  at::Tensor value_up;    // B_V [kv_heads * head_dim, value_rank]
  at::Tensor key_bias;    // [kv_heads * head_dim] or undefined (models without attention bias)
  at::Tensor value_bias;
  at::Tensor key_norm;  // [head_dim]: the model's k_norm weight, or undefined (no key norm)
};

// Every layer's factors, kept once on the CPU and copied to a device and dtype on first use there (each copy
// lives as long as this object, so caches on different devices can share it).
class LowRankFactors {
 public:
  explicit LowRankFactors(std::vector<LowRankLayer> layers);
  const std::vector<LowRankLayer>& on(const at::TensorOptions& options) const;
  const std::vector<LowRankLayer>& cpu() const { return layers_; }
  int64_t key_rank(int64_t layer) const { return layers_.at(layer).key_down.size(0); }
  int64_t value_rank(int64_t layer) const { return layers_.at(layer).value_down.size(0); }

 private:
  std::vector<LowRankLayer> layers_;
  mutable std::mutex mutex_;
  mutable std::map<std::string, std::vector<LowRankLayer>> converted_;  // by device and dtype
};

struct LowRankCacheOptions {
  int64_t window = 32;  // newest tokens also kept exact
  int64_t group = 32;   // key quantization group (tokens); unused at 16 bits
  int64_t bits = 16;    // 16 = the model's dtype; 2, 4 or 8 = packed codes
  double key_norm_eps = 1e-6;  // the model's rms_norm_eps, for factors that carry a key_norm
};

// What is wrong with `options` for these factors (bits other than 2/4/8/16, a latent width per KV head that
// packed codes cannot fill whole bytes with, a window or group below its minimum), or "" when they fit.
std::string low_rank_options_problem(const LowRankFactors& factors, const LowRankCacheOptions& options,
                                     int64_t kv_heads);

class LowRankKVCache : public KVCache {
 public:
  // inv_freq: the model's RoPE inverse frequencies [head_dim / 2] (float32). decode_query_heads: the model's query
  // heads when one-token steps may use the decode kernel (no sliding window), else 0. capacity: tokens to allocate
  // for up front (buffers grow by doubling past it).
  LowRankKVCache(std::shared_ptr<const LowRankFactors> factors, const LowRankCacheOptions& options, int64_t batch,
                 int64_t kv_heads, int64_t head_dim, const at::Tensor& inv_freq, const at::TensorOptions& tensors,
                 int64_t decode_query_heads = 0, int64_t capacity = 0);

  void attention_input(int64_t layer, const at::Tensor& hidden) override;
  CachedKV update(int64_t layer, const at::Tensor& keys, const at::Tensor& values,
                  const at::Tensor& positions) override;
  void after_attention(int64_t layer, const at::Tensor& queries, const at::Tensor& positions) override;
  int64_t length(int64_t layer) const override { return layers_.at(layer).tokens; }
  int64_t bytes() const override;

  int64_t exact_tokens(int64_t layer) const { return layers_.at(layer).exact_keys.size(2); }
  int64_t quantized_tokens(int64_t layer) const { return layers_.at(layer).quantized_tokens; }
  int64_t kernel_steps() const { return kernel_steps_; }  // layer steps handed to the decode kernel

 private:
  struct Layer {
    at::Tensor pending_input;    // [batch, new_tokens, hidden] from attention_input(), until update()
    QuantizedBlock key_block;    // packed key latents (bits < 16): codes [batch, groups, group, packed rank]
    QuantizedBlock value_block;  // packed value latents: codes [batch, 1, quantized tokens, packed rank]
    int64_t quantized_tokens = 0;
    // Latents not packed (every token at 16 bits, else the waiting group): slots [0, latent_tokens) of buffers
    // [batch, capacity, rank] that grow by doubling, so a decode step appends in place.
    at::Tensor key_latents, value_latents;
    int64_t latent_tokens = 0;
    at::Tensor exact_keys;  // [batch, kv_heads, window, head_dim], after RoPE
    at::Tensor exact_values;
    at::Tensor positions;  // [batch, capacity]: every token's position in slots [0, tokens), -1 beyond
    int64_t tokens = 0;
  };
  // Keys and values of the first `count` tokens rebuilt from their latents: [batch, kv_heads, count, head_dim].
  std::pair<at::Tensor, at::Tensor> rebuilt(int64_t layer, int64_t count) const;

  std::shared_ptr<const LowRankFactors> factors_;
  const std::vector<LowRankLayer>* device_factors_;
  LowRankCacheOptions options_;
  int64_t kv_heads_, head_dim_, decode_query_heads_;
  at::Tensor inv_freq_;
  at::ScalarType dtype_;
  std::vector<Layer> layers_;
  int64_t kernel_steps_ = 0;
};

}  // namespace kvforge
