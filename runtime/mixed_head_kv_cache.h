#pragma once
// A KV cache with full and streaming KV heads in the same layer, as RLKV and DuoAttention deploy their heads:
// a full head keeps every token, a streaming head only its first `sink` tokens and its `recent` newest ones.
// Within a step a streaming head sees the step's own tokens through the sink + window mask, so a prefill in one
// pass equals token-by-token decoding (DuoAttention's one-shot HF prefill instead gives them the whole prompt).
//
// The streaming heads live in a ring of sink + recent slots allocated once: position p sits in slot p below the
// sink and in slot sink + (p − sink) mod recent after it, so a decode step overwrites the token that just left the
// window and nothing is gathered or copied. Attention gets both stores as CachedKV::head_parts: a decode step on the
// GPU (decode_query_heads > 0, bf16) reads them in one kernels::decode_attention_by_head launch in which a streaming
// head reads its ring only; a prompt chunk's streaming heads attend the ring and the chunk by banded_attention.
// bytes() is what the two stores hold.
#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "runtime/kv_cache.h"

namespace kvforge {

class MixedHeadKVCache : public KVCache {
 public:
  // streaming_heads[layer][head]: true = sink + recent only (recent >= 1). decode_query_heads: the model's query
  // heads, so decode steps can use the kernel (0 = attention part by part).
  MixedHeadKVCache(const std::vector<std::vector<bool>>& streaming_heads, int64_t sink_tokens, int64_t recent_tokens,
                   int64_t batch, int64_t head_dim, int64_t capacity, const at::TensorOptions& options,
                   int64_t decode_query_heads = 0);

  // A decode step's positions (one new token per sequence) must be >= 0.
  CachedKV update(int64_t layer, const at::Tensor& keys, const at::Tensor& values,
                  const at::Tensor& positions) override;
  void after_attention(int64_t layer, const at::Tensor& queries, const at::Tensor& positions) override;
  int64_t length(int64_t layer) const override;
  int64_t bytes() const override;
  // The full heads' stores go fixed-shape (FullKVCache's); the ring already is.
  bool begin_fixed_shape_decode(int64_t steps) override;
  void fixed_shape_step_done() override;

  int64_t streaming_slots(int64_t layer) const;           // ring slots of a streaming head of `layer` (0 without any)
  int64_t kernel_steps() const { return kernel_steps_; }  // layer-steps attended by decode_attention_by_head

 private:
  struct Layer {
    at::Tensor full_heads, streaming_heads;          // int64 head indices
    std::vector<int64_t> full_list, streaming_list;  // the same on the host
    std::unique_ptr<KVCache> full;                   // the full heads, every token
    at::Tensor keys, values;                         // the ring: [batch, streaming, sink + recent, head_dim]
    at::Tensor positions;                            // [batch, sink + recent], -1 = empty
    // A prompt chunk's streaming keys, values and positions, written into the ring once its queries attended.
    at::Tensor chunk_keys, chunk_values, chunk_positions;
    bool decodes_by_kernel = false;  // a fixed-shape step of this layer goes to decode_attention_by_head
  };
  // Ring slot of each position (>= 0).
  at::Tensor ring_slots(const at::Tensor& positions) const;
  // Writes a prompt chunk's tokens that stay (sinks and the `recent` newest) into the ring.
  void write_chunk(Layer& layer) const;

  std::vector<Layer> layers_;
  int64_t sink_tokens_, recent_tokens_;
  int64_t decode_query_heads_;
  int64_t kernel_steps_ = 0;
  bool fixed_shape_ = false;
};

}  // namespace kvforge
