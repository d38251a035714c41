#include "runtime/rms_norm.h"

#include "kernels/bindings.h"

namespace kvforge {

at::Tensor rms_normalized(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (kernels::rms_norm_supported(x, weight)) return kernels::rms_norm(x, weight, eps);
  at::Tensor h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * h.to(x.scalar_type());
}

}  // namespace kvforge
