#pragma once
// KV caches. A cache holds, per layer, post-RoPE keys and values for a batch plus the true position of
// every slot (-1 = empty or padding), so masks follow positions rather than slot indices and
// compressed layouts (streaming, selected tokens) can keep positions after eviction.
#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "kernels/bindings.h"

namespace kvforge {

struct CachedKV {
  at::Tensor keys;    // [batch, kv_heads, slots, head_dim]
  at::Tensor values;  // [batch, kv_heads, slots, head_dim]
  // [batch, slots] int64, or [batch, kv_heads, slots] when heads keep different tokens; -1 = no token
  at::Tensor positions;
  // Streaming attention (sink + recent window) when window_tokens > 0: a query sees keys at positions
  // below sink_tokens or within window_tokens of its own, so a streaming prefill equals streaming decode.
  int64_t sink_tokens = 0;
  int64_t window_tokens = 0;
  // When set (CSKV on the GPU, one query per sequence): keys/values/positions hold only the exact window and the
  // older tokens are these latents, which attention reads with kernels::low_rank_decode_attention.
  std::shared_ptr<const kernels::LowRankDecodeInputs> low_rank;
  // When set (a KIVI cache on the GPU, one query per sequence): keys/values hold only the bf16 recent window and
  // attention reads the codes with kernels::quantized_decode_attention; positions cover every held token.
  std::shared_ptr<const kernels::QuantizedDecodeInputs> quantized;
  // When set (mixed full and streaming heads in one layer, as RLKV and DuoAttention deploy them): keys/values/positions
  // are undefined, the query heads of each part's KV heads attend that part's slots, and part `streaming_part` (if
  // any) follows the sink + window rule above. Without a window (a decode step: every held slot visible) one
  // kernels::decode_attention_by_head launch reads every part on the GPU.
  std::shared_ptr<const kernels::DecodeHeadParts> head_parts;
  int64_t streaming_part = -1;
};

class KVCache {
 public:
  virtual ~KVCache() = default;
  // Called before update() with the attention's input (after the input norm), [batch, new_tokens, hidden], for
  // layouts that store a projection of it rather than the keys and values (CSKV's latents).
  virtual void attention_input(int64_t /*layer*/, const at::Tensor& /*hidden*/) {}
  // Called before update() with the step's keys and values before RoPE, [batch, kv_heads, new_tokens, head_dim], for
  // readers of the unrotated projections (KV Prediction records its auxiliary model's through it).
  virtual void pre_rope(int64_t /*layer*/, const at::Tensor& /*keys*/, const at::Tensor& /*values*/) {}
  // Stores this step's keys/values for `layer` and returns everything the step's queries attend to.
  // keys, values: [batch, kv_heads, new_tokens, head_dim]; positions: [batch, new_tokens] int64.
  virtual CachedKV update(int64_t layer, const at::Tensor& keys, const at::Tensor& values,
                          const at::Tensor& positions) = 0;
  // Called once the step's queries have attended to what update() returned, so layouts that choose
  // tokens by attention (SnapKV, H2O) can score them and evict before the next step.
  // queries: [batch, heads, new_tokens, head_dim] after RoPE; positions: [batch, new_tokens].
  virtual void after_attention(int64_t /*layer*/, const at::Tensor& /*queries*/, const at::Tensor& /*positions*/) {}
  // Slots filled in `layer` (the same for every sequence and head of the batch).
  virtual int64_t length(int64_t layer) const = 0;
  // Bytes of device memory this cache holds for keys and values right now (allocations, not a formula).
  virtual int64_t bytes() const = 0;

  // Fixed-shape decode, what runtime/decode_graph captures in a CUDA graph. A layout that supports it returns true
  // and, for the next `steps` one-token update()s, writes where its own device-side state says and returns tensors of
  // the same shape and address every time, deciding nothing on the host. A replayed graph calls no update(), so the
  // decoder reports every step that ran with fixed_shape_step_done(), which keeps the host's counts (length()) true.
  // Layouts that cannot return false and keep decoding as before.
  virtual bool begin_fixed_shape_decode(int64_t /*steps*/) { return false; }
  virtual void fixed_shape_step_done() {}
};

// The full layout: every token of every head, in preallocated buffers that grow by doubling.
class FullKVCache : public KVCache {
 public:
  // `initial_capacity` slots are allocated up front; size it to prompt + new tokens to avoid regrowth.
  FullKVCache(int64_t num_layers, int64_t batch, int64_t kv_heads, int64_t head_dim, int64_t initial_capacity,
              const at::TensorOptions& options);

  CachedKV update(int64_t layer, const at::Tensor& keys, const at::Tensor& values,
                  const at::Tensor& positions) override;
  int64_t length(int64_t layer) const override { return layers_[layer].length; }
  int64_t bytes() const override;
  int64_t capacity(int64_t layer) const { return layers_[layer].keys.size(2); }
  // Every step then writes at one device-side slot index and returns the whole capacity, the slots still to come at
  // position -1 (masked) and zero.
  bool begin_fixed_shape_decode(int64_t steps) override;
  void fixed_shape_step_done() override;

 private:
  struct Layer {
    at::Tensor keys;  // [batch, kv_heads, capacity, head_dim]
    at::Tensor values;
    at::Tensor positions;  // [batch, capacity]
    int64_t length = 0;
  };
  void grow(Layer& layer, int64_t needed);

  std::vector<Layer> layers_;
  at::Tensor next_slot_;  // [1] int64 on the device: the fixed-shape step's slot, advanced after the last layer
};

}  // namespace kvforge
