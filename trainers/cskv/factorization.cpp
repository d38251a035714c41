#include "trainers/cskv/factorization.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace kvforge::cskv {
namespace {

void check_rank(const at::Tensor& weight, int64_t rank) {
  if (rank < 1 || rank > std::min(weight.size(0), weight.size(1)))
    throw std::invalid_argument("rank " + std::to_string(rank) + " outside 1.." +
                                std::to_string(std::min(weight.size(0), weight.size(1))));
}

}  // namespace

LowRankPair svd_factors(const at::Tensor& weight, int64_t rank, const at::Tensor& input_scale, double alpha) {
  check_rank(weight, rank);
  at::Tensor transposed = weight.to(at::kDouble).t();  // [in, out]
  at::Tensor row_scale;
  if (input_scale.defined()) {
    row_scale = input_scale.to(transposed.device(), at::kDouble).pow(alpha).unsqueeze(1);  // [in, 1]
    transposed = transposed * row_scale;
  }
  auto [u, s, vh] = at::linalg_svd(transposed, /*full_matrices=*/false);
  at::Tensor root = s.narrow(0, 0, rank).sqrt();
  at::Tensor left = u.narrow(1, 0, rank) * root;        // [in, rank]
  at::Tensor right = vh.narrow(0, 0, rank).t() * root;  // [out, rank]
  if (row_scale.defined()) left = left / row_scale;
  return {left.t().contiguous().to(at::kFloat), right.contiguous().to(at::kFloat)};
}

LowRankPair whitened_factors(const at::Tensor& weight, int64_t rank, const at::Tensor& second_moment) {
  check_rank(weight, rank);
  at::Tensor w = weight.to(at::kDouble);
  at::Tensor c = second_moment.to(w.device(), at::kDouble);
  // A relative damping keeps the Cholesky defined for channels the calibration text never moves.
  const double damping = 1e-6 * c.diagonal().mean().item<double>() + 1e-12;
  at::Tensor lower = at::linalg_cholesky(c + damping * at::eye(c.size(0), c.options()));
  auto [p, sigma, qh] = at::linalg_svd(at::mm(w, lower), /*full_matrices=*/false);
  at::Tensor root = sigma.narrow(0, 0, rank).sqrt();
  at::Tensor up = p.narrow(1, 0, rank) * root;  // [out, rank]
  // down = √Σ Qᵀ L⁻¹, i.e. downᵀ solves Lᵀ·downᵀ = Q√Σ
  at::Tensor down_t = at::linalg_solve_triangular(lower.t(), qh.narrow(0, 0, rank).t() * root, /*upper=*/true);
  return {down_t.t().contiguous().to(at::kFloat), up.contiguous().to(at::kFloat)};
}

int64_t rank_for_density(double density, int64_t head_dim, int64_t kv_heads, int64_t multiple) {
  int64_t per_head = static_cast<int64_t>(std::floor(density * static_cast<double>(head_dim) + 1e-9));
  per_head -= per_head % std::max<int64_t>(multiple, 1);
  return std::min(per_head, head_dim) * kv_heads;
}

}  // namespace kvforge::cskv
