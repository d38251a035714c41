#pragma once
// The one place where kernels meet LibTorch: tensor checks, dtype dispatch, stream selection.
#include <ATen/ATen.h>

namespace kvforge::kernels {

// True when the CUDA kernel can serve this call: built with CUDA, x on a GPU, contiguous, fp32 or
// bf16, weight matching, and no gradient needed (the kernel has no backward).
bool rms_norm_supported(const at::Tensor& x, const at::Tensor& weight);

// x: [..., dim]; weight: [dim]. Requires rms_norm_supported(x, weight).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// The float64 CPU reference on any tensors (returns float64 on the CPU).
at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace kvforge::kernels
