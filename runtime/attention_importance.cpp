#include "runtime/attention_importance.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/transformer.h"

namespace kvforge {

at::Tensor received_attention(const at::Tensor& queries, const at::Tensor& query_positions, const at::Tensor& keys,
                              const at::Tensor& key_positions, int64_t sink_tokens, int64_t window_tokens,
                              bool queries_trail_keys, int64_t query_chunk) {
  const int64_t batch = queries.size(0), heads = queries.size(1), count = queries.size(2), head_dim = queries.size(3);
  const int64_t kv_heads = keys.size(1), group = heads / kv_heads, slots = keys.size(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  at::Tensor received = at::zeros({batch, kv_heads, slots}, keys.options().dtype(at::kFloat));
  // About 2^28 float32 scores (1 GiB) per chunk: a batch of long prompts scores a few queries at a time.
  if (query_chunk <= 0)
    query_chunk = std::max<int64_t>(1, (int64_t{1} << 28) / std::max<int64_t>(batch * heads * slots, 1));
  // Under queries_trail_keys later chunks see more keys: going from the last chunk back, the allocator reuses the first
  // (largest) chunk's blocks instead of caching a new size each time (at 32k tokens that reserved all 141 GB of an
  // H200).
  const int64_t chunks = (count + query_chunk - 1) / query_chunk;
  for (int64_t chunk = chunks - 1; chunk >= 0; --chunk) {
    const int64_t start = chunk * query_chunk;
    const int64_t width = std::min(query_chunk, count - start);
    // Key slots this chunk can see: all, or under queries_trail_keys those up to its last query's.
    const int64_t seen = queries_trail_keys ? std::min(slots, slots - count + start + width) : slots;
    at::Tensor positions = query_positions.narrow(1, start, width);
    // [batch, kv_heads, group, width, seen]; the query dtype's matmul, scaled in float32 below
    at::Tensor grouped = queries.narrow(2, start, width).reshape({batch, kv_heads, group, width, head_dim});
    at::Tensor keys_t = keys.narrow(2, 0, seen).to(queries.scalar_type()).unsqueeze(2).transpose(-1, -2);
    at::Tensor scores = at::matmul(grouped, keys_t).to(at::kFloat).mul_(scale);
    at::Tensor visible =
        attention_mask(positions, key_positions.narrow(-1, 0, seen), /*sliding_window=*/0, sink_tokens, window_tokens);
    scores.masked_fill_(visible.unsqueeze(2).logical_not(), -std::numeric_limits<double>::infinity());
    at::Tensor probs = at::softmax(scores, -1);
    // One pass over the probabilities: the voting queries' rows (padding does not vote) summed and averaged over the
    // group as a [1, group × width] × [group × width, seen] product.
    at::Tensor voting =
        (positions >= 0).to(at::kFloat).view({batch, 1, 1, width}).expand({batch, kv_heads, group, width});
    at::Tensor weights = (voting / static_cast<double>(group)).reshape({batch, kv_heads, 1, group * width});
    received.narrow(2, 0, seen) += at::matmul(weights, probs.view({batch, kv_heads, group * width, seen})).squeeze(2);
  }
  return received;
}

}  // namespace kvforge
