#pragma once
// Expected Attention (Devoto et al., kvpress's ExpectedAttentionPress): how much attention the queries still to come
// will pay each held key, from the prompt's query statistics. The position-free queries (RoPE undone) are modelled as
// a Gaussian N(μ, Σ) per query head, the first `sink_tokens` positions left out as outliers; rotating it by the mean
// RoPE rotation R̄ of the next `future_positions` positions gives the future query's law, under which
// E[exp(q·k/√d)] = exp(μ'·k/√d + kᵀΣ'k/(2d)) with μ' = R̄μ, Σ' = R̄ΣR̄ᵀ. A key's score is that softmax over the held
// keys, averaged over the query heads that share its KV head, times ‖v‖ (attention moves a token's value, so a small
// value matters less). Prompt scoring only; no score matrix over the prompt's queries is formed.
#include <ATen/ATen.h>

namespace kvforge {

// Floats of Σ'k one slice of keys may form (256 MiB): at once it is batch × heads × slots × head_dim, 8 GiB for 16
// prompts of 32k at Llama-3.1-8B's shape.
constexpr int64_t kExpectedAttentionSliceElements = int64_t{1} << 26;

struct ExpectedAttentionOptions {
  int64_t sink_tokens = 4;         // positions below this do not enter the query statistics
  int64_t future_positions = 512;  // the RoPE rotation is averaged over the next this many positions
  bool use_covariance = true;      // false: the mean query alone (the kᵀΣ'k term dropped)
  bool use_value_norm = true;      // false: the softmax alone
};

// queries: [batch, heads, tokens, head_dim] after RoPE; query_positions: [batch, tokens] (-1 = padding, ignored);
// keys, values: [batch, kv_heads, slots, head_dim] (keys after RoPE); key_positions: [batch, kv_heads, slots]
// (-1 = empty, scored 0); inv_freq: the model's [head_dim / 2]. Returns [batch, kv_heads, slots] float32.
// `slice_elements` bounds the floats of Σ'k formed at once (keys go through in slices of slots, at least one).
at::Tensor expected_attention_scores(const at::Tensor& queries, const at::Tensor& query_positions,
                                     const at::Tensor& keys, const at::Tensor& values, const at::Tensor& key_positions,
                                     const at::Tensor& inv_freq, const ExpectedAttentionOptions& options,
                                     int64_t slice_elements = kExpectedAttentionSliceElements);

}  // namespace kvforge
