#include <cuda_bf16.h>

#include <cmath>
#include <cstring>

#include "kernels/hybrid_decode_step.h"

namespace kvforge::kernels {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

__device__ float to_float(float v) { return v; }
__device__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ T from_float(float v);
template <>
__device__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <typename T>
__device__ float rounded(float v) {
  return to_float(from_float<T>(v));
}

template <bool kMax>
__device__ float block_reduce(float value, float* scratch) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, value, offset);
    value = kMax ? fmaxf(value, other) : value + other;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read from the last reduction
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  value = scratch[0];
  for (int w = 1; w < kWarps; ++w) value = kMax ? fmaxf(value, scratch[w]) : value + scratch[w];
  return value;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) hybrid_decode_step_kernel(HybridDecodeStep<T> a) {
  const int64_t bh = blockIdx.x;
  const int b = static_cast<int>(bh / a.heads), h = static_cast<int>(bh % a.heads);
  const int F = a.features, D = a.head_dim, Dv = a.value_dim, W = a.window, tid = threadIdx.x;
  const int slot = static_cast<int>(a.tokens % W);
  extern __shared__ float shared[];
  float* qf = shared;          // [F]
  float* kf_new = qf + F;      // [F]
  float* kf_old = kf_new + F;  // [F]
  float* q = kf_old + F;       // [D]
  float* v_new = q + D;        // [Dv]
  float* v_old = v_new + Dv;   // [Dv]
  float* num = v_old + Dv;     // [Dv] linear numerator
  float* wnum = num + Dv;      // [Dv] window numerator
  float* weights = wnum + Dv;  // [W] window scores, then weights
  __shared__ float scratch[kWarps];

  const bool real = a.valid == nullptr || a.valid[b];
  const float keep = real ? 1.0f : 0.0f;  // padding adds nothing to the ring or the state and decays nothing
  const float gate_new = a.log_gate != nullptr ? a.log_gate[bh] * keep : 0.0f;
  const bool fold_old = !a.linear_all && a.tokens >= W;  // the token in this slot leaves the window now
  T* slot_key = a.ring_keys + (bh * W + slot) * D;
  T* slot_value = a.ring_values + (bh * W + slot) * Dv;
  T* slot_features = a.ring_features + (bh * W + slot) * F;
  const float gate_old = fold_old ? a.ring_log_gates[bh * W + slot] : 0.0f;
  for (int i = tid; i < F; i += kThreads) {
    qf[i] = to_float(a.query_features[bh * F + i]);
    kf_new[i] = rounded<T>(to_float(a.key_features[bh * F + i]) * keep);  // as the ring stores it
    kf_old[i] = fold_old ? to_float(slot_features[i]) : 0.0f;
  }
  for (int i = tid; i < D; i += kThreads) q[i] = to_float(a.query[bh * D + i]);
  for (int j = tid; j < Dv; j += kThreads) {
    v_new[j] = rounded<T>(to_float(a.value[bh * Dv + j]) * keep);
    v_old[j] = fold_old ? to_float(slot_value[j]) : 0.0f;
    num[j] = wnum[j] = 0.0f;
  }
  __syncthreads();
  // The new token takes the slot (read above before this overwrite).
  for (int i = tid; i < D; i += kThreads) slot_key[i] = a.key[bh * D + i];
  for (int j = tid; j < Dv; j += kThreads) slot_value[j] = from_float<T>(v_new[j]);
  for (int i = tid; i < F; i += kThreads) slot_features[i] = from_float<T>(kf_new[i]);
  if (tid == 0) a.ring_log_gates[bh * W + slot] = gate_new;

  // S and z: fold the leaving token (and the new one when the linear branch reads every key), then read φ(q)ᵀS.
  // Thread j % Dv owns column j over rows tid / Dv, tid / Dv + kThreads / Dv, ...: coalesced rows of S.
  const float decay_old = expf(gate_old), decay_new = expf(gate_new);
  float* S = a.state + bh * F * Dv;
  {
    const int j = tid % Dv, row_step = kThreads / Dv;
    float acc = 0.0f;
    for (int i = tid / Dv; i < F; i += row_step) {
      float s = S[i * Dv + j];
      if (fold_old) s = decay_old * s + kf_old[i] * v_old[j];
      if (a.linear_all) s = decay_new * s + kf_new[i] * v_new[j];
      S[i * Dv + j] = s;
      acc += qf[i] * s;
    }
    atomicAdd(&num[j], acc);
  }
  float* z = a.normaliser + bh * F;
  float den_part = 0.0f;
  for (int i = tid; i < F; i += kThreads) {
    float zi = z[i];
    if (fold_old) zi = decay_old * zi + kf_old[i];
    if (a.linear_all) zi = decay_new * zi + kf_new[i];
    z[i] = zi;
    den_part += qf[i] * zi;
  }
  const float linear_den = block_reduce<false>(den_part, scratch);  // also orders the ring writes before the reads

  // Window: one warp per slot, lanes over the head dimension.
  const int64_t filled = a.tokens + 1 < W ? a.tokens + 1 : W;
  const int warp = tid / 32, lane = tid % 32;
  for (int s = warp; s < filled; s += kWarps) {
    const T* key = a.ring_keys + (bh * W + s) * D;
    float dot = 0.0f;
    for (int d = lane; d < D; d += 32) dot += q[d] * to_float(key[d]);
    for (int offset = 16; offset > 0; offset >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    const bool visible = s == slot ? real : a.ring_valid[b * W + s];  // another head's block may write ring_valid
    if (lane == 0) weights[s] = visible ? dot * a.scale : -INFINITY;
  }
  __syncthreads();
  float local_max = -INFINITY;
  for (int s = tid; s < filled; s += kThreads) local_max = fmaxf(local_max, weights[s]);
  if (a.sink_logits != nullptr)
    for (int m = tid; m < a.sinks; m += kThreads) local_max = fmaxf(local_max, a.sink_logits[h * a.sinks + m]);
  float row_max = block_reduce<true>(local_max, scratch);
  if (isinf(row_max)) row_max = 0.0f;  // no visible key: the branch is empty
  const float window_weight = a.lolcats ? 1.0f / (1.0f + expf(-a.window_logits[h])) : 1.0f;
  float sum_part = 0.0f;
  for (int s = tid; s < filled; s += kThreads) {
    const float w = expf(weights[s] - row_max) * window_weight;
    weights[s] = w;
    sum_part += w;
  }
  if (a.sink_logits != nullptr)
    for (int m = tid; m < a.sinks; m += kThreads) sum_part += expf(a.sink_logits[h * a.sinks + m] - row_max);
  const float window_den = block_reduce<false>(sum_part, scratch);  // also publishes `weights`
  {
    const int j = tid % Dv, slot_step = kThreads / Dv;
    float acc = 0.0f;
    for (int s = tid / Dv; s < filled; s += slot_step)
      acc += weights[s] * to_float(a.ring_values[(bh * W + s) * Dv + j]);
    atomicAdd(&wnum[j], acc);
  }
  __syncthreads();
  if (tid == 0 && h == 0) a.ring_valid[b * W + slot] = real;
  for (int j = tid; j < Dv; j += kThreads) {
    float y;
    if (a.lolcats) {
      const float den = window_den + linear_den;
      y = den > 0.0f ? (wnum[j] + num[j]) / den : 0.0f;
    } else {
      y = (linear_den > 0.0f ? num[j] / linear_den : 0.0f) +
          a.window_scale * (window_den > 0.0f ? wnum[j] / window_den : 0.0f);
    }
    a.out[bh * Dv + j] = from_float<T>(y);
  }
}

template <typename T>
cudaError_t launch(const HybridDecodeStep<T>& step, cudaStream_t stream) {
  const int blocks = step.batch * step.heads;
  if (blocks == 0) return cudaSuccess;
  const size_t shared =
      sizeof(float) * (3 * step.features + step.head_dim + 4 * step.value_dim + static_cast<size_t>(step.window));
  hybrid_decode_step_kernel<T><<<blocks, kThreads, shared, stream>>>(step);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_hybrid_decode_step_f32(const HybridDecodeStep<float>& step, cudaStream_t stream) {
  return launch(step, stream);
}

cudaError_t launch_hybrid_decode_step_bf16(const HybridDecodeStep<uint16_t>& step, cudaStream_t stream) {
  HybridDecodeStep<__nv_bfloat16> typed;
  static_assert(sizeof(typed) == sizeof(step), "the bf16 view must match the raw-word layout");
  std::memcpy(&typed, &step, sizeof(step));
  return launch(typed, stream);
}

}  // namespace kvforge::kernels
