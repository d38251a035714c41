#pragma once
// Prefill attention for streaming heads (StreamingLLM's rule: a key counts if it is at or before the query and its
// position is below `sink` or within `window` of the query's), computing only the key blocks the band reaches. The
// masked path scores every query against every key and throws most away; here each block of queries attends the
// keys held before the chunk, the chunk's sink tokens and the chunk slots up to window − 1 before the block, so the
// work grows with tokens × (window + block) instead of tokens².
#include <ATen/ATen.h>

namespace kvforge {

// Elements of (repeated) keys one slice of blocks may gather: 2^28 bf16 values are 512 MiB each for K and V, and a
// slice of 1024-query blocks is still large enough to keep the kernel busy.
constexpr int64_t kBandedSliceElements = int64_t{1} << 28;

// q: [batch, heads, tokens, head_dim]; keys, values: [batch, kv_heads, prior + tokens, head_dim], `prior` slots held
// before the chunk (any order) followed by the chunk's own slots, aligned with the queries (what a cache hands a
// prompt chunk); query_positions: [batch, tokens]; key_positions: [batch, prior + tokens], -1 = no token. Each
// sequence's real chunk tokens must have consecutive positions (left or right padding around them is fine), as
// prompts do. `block`: queries per block (0: the window, clamped to 64..1024). Equals masked attention under
// attention_mask(query_positions, key_positions, 0, sink, window) on every query that has a position; a chunk too
// short to gain from blocks takes that masked path. `slice_elements` bounds the keys one slice of blocks gathers (at
// least one block a slice).
at::Tensor banded_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                            const at::Tensor& query_positions, const at::Tensor& key_positions, int64_t sink,
                            int64_t window, int64_t block = 0, int64_t slice_elements = kBandedSliceElements);

}  // namespace kvforge
