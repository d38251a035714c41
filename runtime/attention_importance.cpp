#include "runtime/attention_importance.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/transformer.h"

namespace kvforge {

at::Tensor received_attention(const at::Tensor& queries, const at::Tensor& query_positions, const at::Tensor& keys,
                              const at::Tensor& key_positions, int64_t sink_tokens, int64_t window_tokens,
                              int64_t query_chunk) {
  const int64_t batch = queries.size(0), heads = queries.size(1), count = queries.size(2), head_dim = queries.size(3);
  const int64_t kv_heads = keys.size(1), group = heads / kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  at::Tensor keys_t = keys.to(at::kFloat).unsqueeze(2).transpose(-1, -2);  // [batch, kv_heads, 1, head_dim, slots]
  at::Tensor received = at::zeros({batch, kv_heads, keys.size(2)}, keys.options().dtype(at::kFloat));
  for (int64_t start = 0; start < count; start += query_chunk) {
    const int64_t width = std::min(query_chunk, count - start);
    at::Tensor positions = query_positions.narrow(1, start, width);
    // [batch, kv_heads, group, width, slots]
    at::Tensor grouped =
        queries.narrow(2, start, width).reshape({batch, kv_heads, group, width, head_dim}).to(at::kFloat);
    at::Tensor scores = at::matmul(grouped, keys_t) * scale;
    at::Tensor visible = attention_mask(positions, key_positions, /*sliding_window=*/0, sink_tokens, window_tokens);
    scores = scores.masked_fill(visible.unsqueeze(2).logical_not(), -std::numeric_limits<double>::infinity());
    at::Tensor voting = (positions >= 0).to(at::kFloat).view({batch, 1, width, 1});
    received += (at::softmax(scores, -1).mean(2) * voting).sum(2);
  }
  return received;
}

}  // namespace kvforge
