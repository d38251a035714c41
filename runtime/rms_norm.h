#pragma once
// RMSNorm as the Hugging Face Llama family computes it: normalise in fp32, cast back to the input's dtype, then scale
// by the weight. One function, shared by the decoder's norms and the caches that rebuild Qwen3's normalised keys.
#include <ATen/ATen.h>

namespace kvforge {

// x: [..., dim]; weight: [dim]. The fused kernel where it applies, else the same arithmetic in torch.
at::Tensor rms_normalized(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace kvforge
