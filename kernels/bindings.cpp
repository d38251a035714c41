#include "kernels/bindings.h"

#include <ATen/core/grad_mode.h>
#include <stdexcept>
#include <string>

#include "kernels/rms_norm.h"

#ifdef KVFORGE_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace kvforge::kernels {

bool rms_norm_supported(const at::Tensor& x, const at::Tensor& weight) {
#ifdef KVFORGE_HAVE_CUDA
  const bool needs_grad = at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad());
  const auto dtype = x.scalar_type();
  return !needs_grad && x.is_cuda() && weight.device() == x.device() && x.is_contiguous() &&
         weight.is_contiguous() && (dtype == at::kFloat || dtype == at::kBFloat16) &&
         weight.scalar_type() == dtype && weight.dim() == 1 && x.dim() >= 1 && weight.size(0) == x.size(-1);
#else
  return false;
#endif
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (!rms_norm_supported(x, weight)) throw std::invalid_argument("kernels::rms_norm: unsupported tensors");
#ifdef KVFORGE_HAVE_CUDA
  at::Tensor out = at::empty_like(x);
  const int64_t dim = x.size(-1), rows = x.numel() / dim;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream(x.device().index());
  cudaError_t status = x.scalar_type() == at::kFloat
      ? launch_rms_norm_f32(x.data_ptr<float>(), weight.data_ptr<float>(), out.data_ptr<float>(), rows, dim,
                            static_cast<float>(eps), stream)
      : launch_rms_norm_bf16(reinterpret_cast<const uint16_t*>(x.data_ptr()),
                             reinterpret_cast<const uint16_t*>(weight.data_ptr()),
                             reinterpret_cast<uint16_t*>(out.data_ptr()), rows, dim, static_cast<float>(eps), stream);
  if (status != cudaSuccess) throw std::runtime_error(std::string("rms_norm launch failed: ") + cudaGetErrorString(status));
  return out;
#else
  return x;
#endif
}

at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor x64 = x.detach().to(at::kCPU, at::kDouble).contiguous();
  at::Tensor w64 = weight.detach().to(at::kCPU, at::kDouble).contiguous();
  at::Tensor out = at::empty_like(x64);
  const int64_t dim = x64.size(-1);
  kvforge::kernels::rms_norm_reference(x64.data_ptr<double>(), w64.data_ptr<double>(), out.data_ptr<double>(),
                                       x64.numel() / dim, dim, eps);
  return out;
}

}  // namespace kvforge::kernels
