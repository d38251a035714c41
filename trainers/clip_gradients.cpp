#include "trainers/clip_gradients.h"

#include <ATen/ATen.h>

namespace kvforge {

double clip_gradients(const std::vector<at::Tensor>& parameters, double max_norm) {
  std::vector<at::Tensor> grads;
  for (const at::Tensor& parameter : parameters)
    if (parameter.grad().defined()) grads.push_back(parameter.grad());
  if (grads.empty()) return 0.0;
  const std::vector<at::Tensor> norms = at::_foreach_norm(grads, 2, at::kFloat);
  const double total = at::linalg_vector_norm(at::stack(norms), 2).item<double>();
  const double coefficient = max_norm / (total + 1e-6);
  if (max_norm > 0 && coefficient < 1) at::_foreach_mul_(grads, coefficient);
  return total;
}

}  // namespace kvforge
