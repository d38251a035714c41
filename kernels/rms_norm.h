#pragma once
// RMSNorm over the last dimension: out = weight * cast(x * rsqrt(mean(x²) + eps)), the cast being to
// the activations' dtype as in the Hugging Face reference. Plain pointers; no checks here (the
// binding layer validates).
#include <cstdint>

#ifdef KVFORGE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kvforge::kernels {

// Float64 reference on the CPU. x, out: [rows, dim]; weight: [dim].
void rms_norm_reference(const double* x, const double* weight, double* out, int64_t rows, int64_t dim, double eps);

#ifdef KVFORGE_HAVE_CUDA
// x, out: [rows, dim] contiguous; weight: [dim]. One block per row, fp32 accumulation.
cudaError_t launch_rms_norm_f32(const float* x, const float* weight, float* out, int64_t rows, int64_t dim,
                                float eps, cudaStream_t stream);
// bf16 storage as raw 16-bit words, so this header needs no CUDA bf16 types.
cudaError_t launch_rms_norm_bf16(const uint16_t* x, const uint16_t* weight, uint16_t* out, int64_t rows,
                                 int64_t dim, float eps, cudaStream_t stream);
#endif

}  // namespace kvforge::kernels
