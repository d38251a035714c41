#include "runtime/expected_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/rope.h"

namespace kvforge {

at::Tensor expected_attention_scores(const at::Tensor& queries, const at::Tensor& query_positions,
                                     const at::Tensor& keys, const at::Tensor& values, const at::Tensor& key_positions,
                                     const at::Tensor& inv_freq, const ExpectedAttentionOptions& options,
                                     int64_t slice_elements) {
  const int64_t batch = queries.size(0), heads = queries.size(1), head_dim = queries.size(3);
  const int64_t kv_heads = keys.size(1), slots = keys.size(2), group = heads / kv_heads;
  const auto floats = queries.options().dtype(at::kFloat);
  // Position-free queries and which of them count: real tokens past the sinks. [batch, heads, tokens, d]
  const at::Tensor plain = undo_rope(queries.to(at::kFloat), rope_angles(inv_freq, query_positions, at::kFloat));
  const at::Tensor counted = (query_positions >= options.sink_tokens).to(at::kFloat).view({batch, 1, -1, 1});
  const at::Tensor count = counted.sum(2, /*keepdim=*/true).clamp_min(1);      // [batch, 1, 1, 1]
  const at::Tensor mean = (plain * counted).sum(2, /*keepdim=*/true) / count;  // [batch, heads, 1, d]

  // R̄ᵀ per sequence: row j is R̄·e_j, the mean over the next positions of e_j rotated there. [batch, d, d]
  const at::Tensor next = std::get<0>(query_positions.max(1, /*keepdim=*/true)) + 1;  // [batch, 1]
  const at::Tensor future = next + at::arange(options.future_positions, next.options()).unsqueeze(0);
  const at::Tensor basis = at::eye(head_dim, floats).view({1, head_dim, 1, head_dim});
  const at::Tensor rotation_t = apply_rope(basis.expand({batch, head_dim, options.future_positions, head_dim}),
                                           rope_angles(inv_freq, future, at::kFloat))
                                    .mean(2);
  // μ' = R̄μ, as a row: μᵀR̄ᵀ. [batch, heads, 1, d]
  const at::Tensor future_mean = at::matmul(mean, rotation_t.unsqueeze(1));

  // Keys by query head (each KV head's keys serve its group): [batch, kv_heads, 1, slots, d] broadcast over the group.
  const at::Tensor grouped_keys = keys.to(at::kFloat).unsqueeze(2);
  const at::Tensor grouped_mean = future_mean.view({batch, kv_heads, group, 1, head_dim});
  at::Tensor logits = at::matmul(grouped_mean, grouped_keys.transpose(-1, -2)).squeeze(-2) /
                      std::sqrt(static_cast<double>(head_dim));  // [batch, kv_heads, group, slots]
  if (options.use_covariance) {
    const at::Tensor centred = (plain - mean) * counted;
    const at::Tensor covariance = at::matmul(centred.transpose(-1, -2), centred) / count;  // [batch, heads, d, d]
    // Σ' = R̄ΣR̄ᵀ = (R̄ᵀ)ᵀ Σ R̄ᵀ
    const at::Tensor rotation = rotation_t.unsqueeze(1);
    const at::Tensor future_covariance = at::matmul(rotation.transpose(-1, -2), at::matmul(covariance, rotation))
                                             .view({batch, kv_heads, group, head_dim, head_dim});
    // kᵀΣ'k for every held key and query head: [batch, kv_heads, group, slots], a slice of slots at a time.
    at::Tensor spread = at::empty({batch, kv_heads, group, slots}, floats);
    const int64_t per_slice = std::max<int64_t>(slice_elements / (batch * heads * head_dim), 1);
    for (int64_t first = 0; first < slots; first += per_slice) {
      const int64_t taken = std::min(per_slice, slots - first);
      const at::Tensor slice = grouped_keys.narrow(3, first, taken);
      spread.narrow(3, first, taken).copy_((at::matmul(slice, future_covariance) * slice).sum(-1));
    }
    logits = logits + spread / (2.0 * static_cast<double>(head_dim));
  }
  const at::Tensor empty = key_positions < 0;  // [batch, kv_heads, slots]
  logits = logits.masked_fill(empty.unsqueeze(2), -std::numeric_limits<double>::infinity());
  at::Tensor scores = at::softmax(logits, -1).mean(2);  // [batch, kv_heads, slots]
  if (options.use_value_norm) scores = scores * values.to(at::kFloat).norm(2, -1);
  return scores.masked_fill(empty, 0.0);
}

}  // namespace kvforge
