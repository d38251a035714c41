#pragma once
// How much attention each cached slot receives: the score SnapKV, H2O and PrefixKV rank tokens by.
#include <ATen/ATen.h>

namespace kvforge {

// softmax(q·kᵀ/√d) under the position mask (causal, plus sink + window when window_tokens > 0), summed over
// the queries and averaged over the query heads that share each KV head, so GQA and MHA models score on the
// same scale. Queries at position -1 (padding) do not vote. Queries are processed `query_chunk` at a time so
// a long prompt never materialises its whole attention matrix.
//   queries: [batch, heads, count, head_dim] (after RoPE); query_positions: [batch, count]
//   keys: [batch, kv_heads, slots, head_dim]; key_positions: [batch, slots] or [batch, kv_heads, slots]
// Returns [batch, kv_heads, slots] float32.
at::Tensor received_attention(const at::Tensor& queries, const at::Tensor& query_positions, const at::Tensor& keys,
                              const at::Tensor& key_positions, int64_t sink_tokens = 0, int64_t window_tokens = 0,
                              int64_t query_chunk = 256);

}  // namespace kvforge
