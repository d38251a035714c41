#pragma once
// The one place where kernels meet LibTorch: tensor checks, dtype dispatch, stream selection.
#include <ATen/ATen.h>

#include <vector>

namespace kvforge::kernels {

// True when the CUDA kernel can serve this call: built with CUDA, x on a GPU, contiguous, fp32 or
// bf16, weight matching, and no gradient needed (the kernel has no backward).
bool rms_norm_supported(const at::Tensor& x, const at::Tensor& weight);

// x: [..., dim]; weight: [dim]. Requires rms_norm_supported(x, weight).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// The float64 CPU reference on any tensors (returns float64 on the CPU).
at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps);

// Masking of a decode step beyond slot validity: StreamingLLM's sink + window, or a model's sliding
// window (sink 0). query_positions: [batch] int64, the position of each sequence's query.
struct DecodeMaskWindow {
  at::Tensor query_positions;
  int64_t sink = 0;
  int64_t window = 0;  // 0: none
};

// True when the decode-attention kernel can serve one query token per sequence: built with CUDA, bf16 on
// one GPU, q [batch, heads, 1, head_dim] contiguous, k and v [batch, kv_heads, slots, head_dim] with rows
// contiguous (a view of a larger cache buffer is fine) and 16-byte aligned, positions [batch, slots] or
// [batch, kv_heads, slots] int64, head_dim 64/128, 1 to 8 query heads per KV head, no gradient.
bool decode_attention_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& positions);

// Attention of each sequence's single query over the slots whose position is >= 0 (and inside `window`
// when it has one). Returns [batch, heads, 1, head_dim] bf16, written into `out` when given (tests poison
// it first). `splits` > 0 overrides the chunks per sequence (benchmarks explore it).
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& positions,
                            double scale, const DecodeMaskWindow& window = {}, at::Tensor out = {}, int64_t splits = 0);

// The float64 CPU reference on any tensors of those shapes (returns float64 on the CPU).
at::Tensor decode_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& positions, double scale, const DecodeMaskWindow& window = {});

// A layer whose KV heads sit in different buffers (MixedHeadKVCache: full heads in a growing buffer, streaming heads
// in a sink + window ring), attended in one launch: each part holds some of the layer's KV heads.
struct DecodeHeadPart {
  at::Tensor keys, values;     // [batch, n, slots, head_dim], rows contiguous (a view of a larger buffer is fine)
  at::Tensor positions;        // [batch, slots] int64, -1 = empty
  std::vector<int64_t> heads;  // the layer's KV head held at each of the n
};
using DecodeHeadParts = std::vector<DecodeHeadPart>;

// True when the kernel can serve `query_heads` query heads over the parts: each part's tensors as
// decode_attention_supported wants them (positions [batch, slots]), every KV head in exactly one part, at most 64 KV
// heads, 1 to 8 query heads per KV head.
bool decode_by_head_supported(const DecodeHeadParts& parts, int64_t query_heads);

// decode_attention over the parts (q as decode_attention wants it): each KV head reads its own part's slots only,
// so heads that hold a short window cost what they hold.
at::Tensor decode_attention_by_head(const at::Tensor& q, const DecodeHeadParts& parts, double scale,
                                    const DecodeMaskWindow& window = {}, at::Tensor out = {}, int64_t splits = 0);

// The float64 reference: the parts assembled into one per-head view, then decode_attention_reference.
at::Tensor decode_attention_by_head_reference(const at::Tensor& q, const DecodeHeadParts& parts, double scale,
                                              const DecodeMaskWindow& window = {});

// CSKV's bi-branch cache as the low-rank decode kernel reads it (kernels/low_rank_decode_attention.h): latents
// of every token before RoPE, the first `latent_tokens` attended from them, then the exact window after RoPE.
struct LowRankDecodeInputs {
  at::Tensor key_latents;           // [batch, tokens, key_rank]
  at::Tensor value_latents;         // [batch, tokens, value_rank]
  at::Tensor key_up, value_up;      // [kv_heads * head_dim, rank]
  at::Tensor key_bias, value_bias;  // [kv_heads * head_dim] or undefined
  at::Tensor latent_positions;      // [batch, tokens] int64, -1 = padding
  int64_t latent_tokens = 0;
  at::Tensor exact_keys, exact_values;  // [batch, kv_heads, exact, head_dim]
  at::Tensor exact_positions;           // [batch, exact] int64
  at::Tensor inv_freq;                  // [head_dim / 2] float32
};

// True when the kernel can serve one query token per sequence for `query_heads` query heads: built with CUDA,
// bf16 tensors on one GPU, contiguous, shapes consistent, head_dim 64/128, 1 to 8 query heads per KV head, even
// ranks up to 256.
bool low_rank_decode_supported(const LowRankDecodeInputs& inputs, int64_t query_heads);

// q: [batch, heads, 1, head_dim] bf16 after RoPE, contiguous, on the inputs' GPU, no gradient. Returns [batch, heads,
// 1, head_dim] bf16 (into `out` when given); `splits` > 0 overrides the latent chunks per sequence.
at::Tensor low_rank_decode_attention(const at::Tensor& q, const LowRankDecodeInputs& inputs, double scale,
                                     at::Tensor out = {}, int64_t splits = 0);

// The float64 CPU reference on any tensors of those shapes (returns float64 on the CPU).
at::Tensor low_rank_decode_attention_reference(const at::Tensor& q, const LowRankDecodeInputs& inputs, double scale);

// A KIVI cache as the quantized decode kernel reads it (kernels/quantized_decode_attention.h): the QuantizedKVCache's
// codes and fp16 scales of the `quantized` oldest tokens, then its bf16 recent window.
struct QuantizedDecodeInputs {
  int64_t bits = 4;                                    // 2 or 4
  int64_t group = 32;                                  // tokens per key scale, channels per value scale
  at::Tensor key_codes, key_scale, key_minimum;        // [b, h, groups, group, d·bits/8] uint8; [b, h, groups, 1, d]
  at::Tensor value_codes, value_scale, value_minimum;  // [b, h, quantized, d·bits/8] uint8; [b, h, quantized, d/group]
  at::Tensor recent_keys, recent_values;               // [b, h, recent, d] bf16
  at::Tensor positions;                                // [b, quantized + recent] int64, -1 = no token
  int64_t quantized_tokens() const { return key_codes.defined() ? value_codes.size(2) : 0; }
};

// True when the kernel can serve one query token per sequence for `query_heads` query heads: built with CUDA, tensors
// on one GPU and contiguous, bf16 window and fp16 scales, 2 or 4 bits, a power-of-two group of at least 8 dividing
// head_dim 64/128, 1 to 8 query heads per KV head.
bool quantized_decode_supported(const QuantizedDecodeInputs& inputs, int64_t query_heads);

// q: [batch, heads, 1, head_dim] bf16 after RoPE, contiguous, no gradient. Returns [batch, heads, 1, head_dim] bf16
// (into `out` when given); `splits` > 0 overrides the chunks per sequence. The tensor-core kernel serves groups of at
// least 16 and head_dim / 8; `tensor_cores` false forces the CUDA-core one (benchmarks and tests compare them).
at::Tensor quantized_decode_attention(const at::Tensor& q, const QuantizedDecodeInputs& inputs, double scale,
                                      at::Tensor out = {}, int64_t splits = 0, bool tensor_cores = true);

// The float64 CPU reference: the codes dequantized in float64, then decode_attention_reference.
at::Tensor quantized_decode_attention_reference(const at::Tensor& q, const QuantizedDecodeInputs& inputs, double scale);

// The hybrid attention's decode state as HybridDecodeState keeps it (kernels/hybrid_decode_step.h).
struct HybridDecodeTensors {
  at::Tensor state, normaliser;                         // [b, h, F, Dv], [b, h, F] fp32
  at::Tensor keys, values, features, log_gates, valid;  // rings [b, h, W, D|Dv|F], [b, h, W] fp32, [b, W] bool
};
// One token per sequence: query/key features [b, h, 1, F], query/key [b, h, 1, D], value [b, h, 1, Dv] in the rings'
// dtype; log_gate [b, h, 1] or undefined; sink_logits [h, m] or window_logits [h] or neither; valid [b] or undefined.
struct HybridDecodeToken {
  at::Tensor query_features, key_features, query, key, value, log_gate, sink_logits, window_logits, valid;
};

// True when the kernel can serve the step: built with CUDA, every tensor on one GPU, rings bf16 or fp32 and contiguous,
// state fp32, value_dim 32/64/128, no gradient.
bool hybrid_decode_step_supported(const HybridDecodeTensors& state, const HybridDecodeToken& token);

// One step over the whole batch and every head: updates `state` in place and returns [b, h, 1, Dv] in the rings'
// dtype. `tokens`: what the state has seen before this step.
at::Tensor hybrid_decode_step(HybridDecodeTensors& state, const HybridDecodeToken& token, int64_t tokens, bool lolcats,
                              bool linear_all, double window_scale);

}  // namespace kvforge::kernels
