#pragma once
// CSKV's initialisations of one projection W [out, in] (the whole K or V projection of a layer, all KV heads
// together) as up·down with down [rank, in] and up [out, rank], computed in float64.
//   svd:    Wᵀ = U S Vᵀ truncated; down = (U√S)ᵀ, up = V√S.
//   asvd:   the same on diag(s^α)·Wᵀ with s = mean |x| per input channel, then U ← diag(s^−α)·U (ASVD).
//   whiten: with C = E[x xᵀ] = L Lᵀ, the truncated SVD of W·L, mapped back through L⁻¹: the rank-r minimiser of
//           E‖W x − up·down·x‖², which is CSKV's value loss (and its key loss, since RoPE is a rotation) on the
//           calibration tokens; training from svd or asvd descends toward it.
#include <ATen/ATen.h>

namespace kvforge::cskv {

struct LowRankPair {
  at::Tensor down;  // [rank, in] float32
  at::Tensor up;    // [out, rank] float32
};

// input_scale: [in] mean |x| (undefined = plain SVD); alpha: ASVD's exponent (the reference: 0.5).
LowRankPair svd_factors(const at::Tensor& weight, int64_t rank, const at::Tensor& input_scale = {}, double alpha = 0.5);
// second_moment: [in, in] E[x xᵀ] over calibration tokens.
LowRankPair whitened_factors(const at::Tensor& weight, int64_t rank, const at::Tensor& second_moment);

// CSKV's rank rule: int(density · head_dim) channels per KV head, rounded down to a multiple of `multiple` (packed
// codes fill whole bytes), times the KV heads. 0 when the density leaves no channel.
int64_t rank_for_density(double density, int64_t head_dim, int64_t kv_heads, int64_t multiple = 1);

}  // namespace kvforge::cskv
