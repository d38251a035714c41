#pragma once
// How much attention each cached slot receives: the score SnapKV, H2O and PrefixKV rank tokens by.
#include <ATen/ATen.h>

namespace kvforge {

// softmax(q·kᵀ/√d) under the position mask (causal, plus sink + window when window_tokens > 0), summed over
// the queries and averaged over the query heads that share each KV head, so GQA and MHA models score on the
// same scale. Queries at position -1 (padding) do not vote. Queries are processed `query_chunk` at a time (0: as many
// as keep a chunk's scores near 1 GiB) so a long prompt never materialises its whole attention matrix.
// `queries_trail_keys` promises that the queries are the last `count` of the keys' tokens, in slot order (a prompt
// scoring itself or its last window): a chunk then reads only the key slots up to its last query, about half the work
// of a causal prompt. The scores are computed in the inputs' dtype (bf16 on the GPU, as the reference implementations'
// eager attention does) and softmaxed in float32.
//   queries: [batch, heads, count, head_dim] (after RoPE); query_positions: [batch, count]
//   keys: [batch, kv_heads, slots, head_dim]; key_positions: [batch, slots] or [batch, kv_heads, slots]
// Returns [batch, kv_heads, slots] float32.
at::Tensor received_attention(const at::Tensor& queries, const at::Tensor& query_positions, const at::Tensor& keys,
                              const at::Tensor& key_positions, int64_t sink_tokens = 0, int64_t window_tokens = 0,
                              bool queries_trail_keys = false, int64_t query_chunk = 0);

}  // namespace kvforge
