#include <cuda_bf16.h>

#include "kernels/rms_norm.h"

namespace kvforge::kernels {
namespace {

constexpr int kThreads = 256;

__device__ float to_float(float v) { return v; }
__device__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ T from_float(float v);
template <> __device__ float from_float<float>(float v) { return v; }
template <> __device__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

__device__ float block_sum(float value) {
  __shared__ float warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  value = lane < kThreads / 32 ? warp_sums[lane] : 0.0f;
  if (warp == 0)
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  __shared__ float total;
  if (threadIdx.x == 0) total = value;
  __syncthreads();
  return total;
}

// Two roundings on purpose (normalised value to T, then the product to T) to match the reference.
template <typename T>
__global__ void rms_norm_kernel(const T* __restrict__ x, const T* __restrict__ weight, T* __restrict__ out,
                                int64_t dim, float eps) {
  const T* in = x + blockIdx.x * dim;
  T* row_out = out + blockIdx.x * dim;
  float sum_squares = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
    const float v = to_float(in[i]);
    sum_squares += v * v;
  }
  const float scale = rsqrtf(block_sum(sum_squares) / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += kThreads) {
    const float normalised = to_float(from_float<T>(to_float(in[i]) * scale));
    row_out[i] = from_float<T>(to_float(weight[i]) * normalised);
  }
}

template <typename T>
cudaError_t launch(const T* x, const T* weight, T* out, int64_t rows, int64_t dim, float eps, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  rms_norm_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, weight, out, dim, eps);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_rms_norm_f32(const float* x, const float* weight, float* out, int64_t rows, int64_t dim, float eps,
                                cudaStream_t stream) {
  return launch(x, weight, out, rows, dim, eps, stream);
}

cudaError_t launch_rms_norm_bf16(const uint16_t* x, const uint16_t* weight, uint16_t* out, int64_t rows, int64_t dim,
                                 float eps, cudaStream_t stream) {
  return launch(reinterpret_cast<const __nv_bfloat16*>(x), reinterpret_cast<const __nv_bfloat16*>(weight),
                reinterpret_cast<__nv_bfloat16*>(out), rows, dim, eps, stream);
}

}  // namespace kvforge::kernels
