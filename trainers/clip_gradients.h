#pragma once
// Gradient clipping by global norm, torch.nn.utils.clip_grad_norm_'s rule (scale every gradient by
// max_norm / (norm + 1e-6) when that is below 1), with ATen's multi-tensor kernels: a few launches per step instead of
// two or three per parameter tensor, which LibTorch's C++ clip_grad_norm_ spends.
#include <ATen/core/Tensor.h>

#include <vector>

namespace kvforge {

// The L2 norm over every defined gradient of `parameters` (norms taken in fp32), before clipping; clips only when
// max_norm > 0. Parameters without a gradient are skipped; none at all gives 0.
double clip_gradients(const std::vector<at::Tensor>& parameters, double max_norm);

}  // namespace kvforge
