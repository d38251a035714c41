#pragma once
// A KV cache with full and streaming KV heads in the same layer, as RLKV and DuoAttention deploy their heads:
// a full head keeps every token, a streaming head only its first `sink` tokens and its `recent` newest ones
// (so it never holds more than sink + recent slots between steps, whatever the sequence length). Within a
// step a streaming head sees the step's own tokens through the sink + window mask, so a prefill in one pass
// equals token-by-token decoding (DuoAttention's one-shot HF prefill instead gives them the whole prompt).
//
// The two stores are separate allocations (bytes() is what they hold); attention reads them through one
// per-head view with empty slots at position -1, assembled each step. A decode step trims the streaming
// heads before attending, so every slot it shows is visible and the decode kernel reads the view directly.
#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "runtime/kv_cache.h"

namespace kvforge {

class MixedHeadKVCache : public KVCache {
 public:
  // streaming_heads[layer][head]: true = sink + recent only.
  MixedHeadKVCache(const std::vector<std::vector<bool>>& streaming_heads, int64_t sink_tokens, int64_t recent_tokens,
                   int64_t batch, int64_t head_dim, int64_t capacity, const at::TensorOptions& options);

  CachedKV update(int64_t layer, const at::Tensor& keys, const at::Tensor& values,
                  const at::Tensor& positions) override;
  void after_attention(int64_t layer, const at::Tensor& queries, const at::Tensor& positions) override;
  int64_t length(int64_t layer) const override;
  int64_t bytes() const override;

  int64_t streaming_slots(int64_t layer) const;  // slots a streaming head of `layer` holds (0 without any)

 private:
  struct Layer {
    at::Tensor full_heads, streaming_heads;  // int64 head indices
    at::Tensor streaming_mask;               // [kv_heads] bool
    std::unique_ptr<KVCache> full;           // the full heads, every token
    at::Tensor keys, values;                 // streaming heads: [batch, streaming, slots, head_dim]
    at::Tensor positions;                    // [batch, slots], -1 = empty
  };
  // Drops a streaming store down to the sink positions and the `recent` newest, per sequence.
  void keep_window(Layer& layer, int64_t recent) const;

  std::vector<Layer> layers_;
  int64_t sink_tokens_, recent_tokens_, kv_heads_;
};

}  // namespace kvforge
