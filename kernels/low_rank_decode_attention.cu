#include <cuda_bf16.h>
#include <mma.h>

#include <algorithm>
#include <cmath>

#include "kernels/group_dispatch.h"
#include "kernels/low_rank_decode_attention.h"
#include "kernels/mma_16816.cuh"

namespace kvforge::kernels {
namespace {

constexpr int kWarps = 4;  // per chunk block; each warp keeps its own softmax state and writes its own partial
constexpr int kThreads = 32 * kWarps;
constexpr int kTile = 16;  // latent tokens per warp step: the M of one m16n8k16 MMA
constexpr int kMaxRank = 256;
constexpr int kValuePairs = kMaxRank / 64;  // value-latent channel pairs per lane
constexpr int kMinChunk = 256;              // latent tokens per block at least, so the merge stays cheap
constexpr int kKeySteps = 4;                // k-steps of latent fragments loaded before they are used

__device__ __forceinline__ float warp_sum(float value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

// Reduction over the 8 quads of a warp (lanes with the same lane % 4), each quad counted once.
__device__ __forceinline__ float quads_max(float value) {
#pragma unroll
  for (int offset = 4; offset < 32; offset <<= 1) value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}

__device__ __forceinline__ float quads_sum(float value) {
#pragma unroll
  for (int offset = 4; offset < 32; offset <<= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

int padded_rank(int64_t rank) { return static_cast<int>((rank + 15) / 16 * 16); }

// B_K[h] rows in shared memory are padded by 8 elements so the 8 rows one fragment load touches fall in
// different banks.
__host__ __device__ constexpr int up_stride(int rank_pad) { return rank_pad + 8; }

template <int HEAD_DIM, int GROUP>
size_t chunk_shared_bytes(int rank_pad) {
  return sizeof(__nv_bfloat16) * HEAD_DIM * up_stride(rank_pad) + sizeof(float) * (GROUP + 2) * HEAD_DIM;
}

// Per (chunk, sequence, KV head), each warp over its tiles of 16 latent tokens: rebuild the tile's keys with
// m16n8k16 MMAs (latents [16, rank] from global memory × B_K[h]ᵀ [rank, head_dim] from shared memory) into
// registers, add the bias and rotate at each token's position there (a lane holds both channels of its rotation
// pairs), score against the GROUP query heads, and accumulate the value latents weighted by the online softmax.
// Writes per warp and query head: Σ p·c^V [value_rank], max and sum. Ranks are even (32-bit latent pairs).
template <int HEAD_DIM, int GROUP>
__global__ void __launch_bounds__(kThreads, 3)
    low_rank_chunk_kernel(LowRankDecodeParams p, int64_t chunk, int rank_pad) {
  constexpr int kTiles = HEAD_DIM / 8, kHalfTiles = kTiles / 2, kHalf = HEAD_DIM / 2;
  extern __shared__ __align__(16) unsigned char shared[];
  const int stride = up_stride(rank_pad);
  __nv_bfloat16* up = reinterpret_cast<__nv_bfloat16*>(shared);     // [HEAD_DIM][stride]: B_K[h] rows
  float* query = reinterpret_cast<float*>(up + HEAD_DIM * stride);  // [GROUP][HEAD_DIM], scaled
  float* key_bias = query + GROUP * HEAD_DIM;                       // [HEAD_DIM], zeros without a bias
  float* frequency = key_bias + HEAD_DIM;                           // [HEAD_DIM / 2]

  const LowRankDecodeShape& s = p.shape;
  const int64_t b = blockIdx.y / s.kv_heads, h = blockIdx.y % s.kv_heads;
  const int64_t begin = blockIdx.x * chunk, end = min(begin + chunk, s.latent_tokens);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int key_rank = static_cast<int>(s.key_rank), value_rank = static_cast<int>(s.value_rank);
  const __nv_bfloat16 zero = __float2bfloat16(0.f);

  const __nv_bfloat16* key_up = reinterpret_cast<const __nv_bfloat16*>(p.key_up) + h * HEAD_DIM * key_rank;
  for (int e = threadIdx.x; e < HEAD_DIM * rank_pad; e += kThreads) {
    const int d = e / rank_pad, i = e % rank_pad;
    up[d * stride + i] = i < key_rank ? key_up[d * key_rank + i] : zero;
  }
  const __nv_bfloat16* q = reinterpret_cast<const __nv_bfloat16*>(p.q) + (b * s.heads + h * GROUP) * HEAD_DIM;
  for (int e = threadIdx.x; e < GROUP * HEAD_DIM; e += kThreads) query[e] = __bfloat162float(q[e]) * p.scale;
  const __nv_bfloat16* bias = reinterpret_cast<const __nv_bfloat16*>(p.key_bias);
  for (int d = threadIdx.x; d < HEAD_DIM; d += kThreads)
    key_bias[d] = bias != nullptr ? __bfloat162float(bias[h * HEAD_DIM + d]) : 0.f;
  for (int j = threadIdx.x; j < kHalf; j += kThreads) frequency[j] = p.inv_freq[j];
  __syncthreads();

  // Fragment coordinates: rows (tokens) group and group + 8 of the tile; columns 2·quad_lane, +1 of each n-tile.
  const int group = lane / 4, quad_lane = lane % 4;

  const uint32_t* key_pairs = reinterpret_cast<const uint32_t*>(p.key_latents) + b * s.latent_stride * (key_rank / 2);
  const __nv_bfloat162* value_pairs =
      reinterpret_cast<const __nv_bfloat162*>(p.value_latents) + b * s.latent_stride * (value_rank / 2);
  const int64_t* positions = p.latent_positions + b * s.latent_stride;

  float acc[GROUP][2 * kValuePairs], running_max[GROUP], running_sum[GROUP];
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
#pragma unroll
    for (int m = 0; m < 2 * kValuePairs; ++m) acc[g][m] = 0.f;
    running_max[g] = -INFINITY;
    running_sum[g] = 0.f;
  }

  for (int64_t start = begin + warp * kTile; start < end; start += kWarps * kTile) {
    const int64_t first = start + group, second = first + 8;
    const bool in_first = first < end, in_second = second < end;
    const int64_t first_position = in_first ? positions[first] : -1;
    const int64_t second_position = in_second ? positions[second] : -1;
    const uint32_t* first_row = key_pairs + (in_first ? first : 0) * (key_rank / 2);
    const uint32_t* second_row = key_pairs + (in_second ? second : 0) * (key_rank / 2);

    float keys[kTiles][4];
#pragma unroll
    for (int nt = 0; nt < kTiles; ++nt) keys[nt][0] = keys[nt][1] = keys[nt][2] = keys[nt][3] = 0.f;
    for (int k_base = 0; k_base < rank_pad; k_base += 16 * kKeySteps) {
      uint32_t a[kKeySteps][4];
#pragma unroll
      for (int step = 0; step < kKeySteps; ++step) {  // every load of the group in flight before any MMA
        const int low = k_base + 16 * step + 2 * quad_lane, high = low + 8;
        a[step][0] = in_first && low < key_rank ? first_row[low / 2] : 0u;
        a[step][1] = in_second && low < key_rank ? second_row[low / 2] : 0u;
        a[step][2] = in_first && high < key_rank ? first_row[high / 2] : 0u;
        a[step][3] = in_second && high < key_rank ? second_row[high / 2] : 0u;
      }
#pragma unroll
      for (int step = 0; step < kKeySteps; ++step) {
        const int k = k_base + 16 * step;
        if (k >= rank_pad) break;
#pragma unroll
        for (int nt = 0; nt < kTiles; ++nt) {
          // B fragment: B_K[h]ᵀ (k.., 8nt + group) = up[8nt + group][k..], pairs at 2·quad_lane and + 8
          const __nv_bfloat16* column = up + (nt * 8 + group) * stride + k + 2 * quad_lane;
          mma_16816(keys[nt], a[step], *reinterpret_cast<const uint32_t*>(column),
                    *reinterpret_cast<const uint32_t*>(column + 8));
        }
      }
    }

    // Bias and RoPE at each token's position (fp32 angles, as the model rotates), then the group's scores.
    const float first_where = static_cast<float>(first_position < 0 ? 0 : first_position);
    const float second_where = static_cast<float>(second_position < 0 ? 0 : second_position);
    float first_score[GROUP], second_score[GROUP];
#pragma unroll
    for (int g = 0; g < GROUP; ++g) first_score[g] = second_score[g] = 0.f;
#pragma unroll
    for (int nt = 0; nt < kHalfTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int j = nt * 8 + 2 * quad_lane + e;
#pragma unroll
        for (int row = 0; row < 2; ++row) {
          float sine, cosine;
          sincosf((row == 0 ? first_where : second_where) * frequency[j], &sine, &cosine);
          const float x1 = keys[nt][2 * row + e] + key_bias[j];
          const float x2 = keys[nt + kHalfTiles][2 * row + e] + key_bias[j + kHalf];
          const float rotated_first = x1 * cosine - x2 * sine, rotated_second = x2 * cosine + x1 * sine;
#pragma unroll
          for (int g = 0; g < GROUP; ++g) {
            const float contribution =
                query[g * HEAD_DIM + j] * rotated_first + query[g * HEAD_DIM + j + kHalf] * rotated_second;
            if (row == 0) {
              first_score[g] += contribution;
            } else {
              second_score[g] += contribution;
            }
          }
        }
      }
    }
    const bool first_attended = first_position >= 0, second_attended = second_position >= 0;
    float first_weight[GROUP], second_weight[GROUP];
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
#pragma unroll
      for (int offset = 1; offset < 4; offset <<= 1) {  // the quad's four lanes hold a token's channels
        first_score[g] += __shfl_xor_sync(0xffffffffu, first_score[g], offset);
        second_score[g] += __shfl_xor_sync(0xffffffffu, second_score[g], offset);
      }
      const float tile_max =
          quads_max(fmaxf(first_attended ? first_score[g] : -INFINITY, second_attended ? second_score[g] : -INFINITY));
      const float new_max = fmaxf(running_max[g], tile_max);
      first_weight[g] = second_weight[g] = 0.f;
      if (new_max == -INFINITY) continue;  // warp-uniform: nothing attended yet
      const float factor = __expf(running_max[g] - new_max);
      first_weight[g] = first_attended ? __expf(first_score[g] - new_max) : 0.f;
      second_weight[g] = second_attended ? __expf(second_score[g] - new_max) : 0.f;
      running_sum[g] = running_sum[g] * factor + quads_sum(first_weight[g] + second_weight[g]);
      running_max[g] = new_max;
#pragma unroll
      for (int m = 0; m < 2 * kValuePairs; ++m) acc[g][m] *= factor;
    }
    // Values stay latent: acc[g] += p_t · c^V_t, lanes over channel pairs.
    const int tokens = static_cast<int>(min(static_cast<int64_t>(kTile), end - start));
    // Unrolled without branches so several tokens' loads are in flight at once; a row that is not attended
    // is read as zeros (whatever a padding row holds, even NaN, never reaches the output).
#pragma unroll 4
    for (int t = 0; t < tokens; ++t) {
      const int source = (t % 8) * 4;
      const bool used = __shfl_sync(0xffffffffu, t < 8 ? first_attended : second_attended, source);
      float w[GROUP];
#pragma unroll
      for (int g = 0; g < GROUP; ++g)
        w[g] = __shfl_sync(0xffffffffu, t < 8 ? first_weight[g] : second_weight[g], source);
      const __nv_bfloat162* row = value_pairs + (start + t) * (value_rank / 2);
#pragma unroll
      for (int m = 0; m < kValuePairs; ++m) {
        const int pair = lane + 32 * m;
        const float2 v = used && pair < value_rank / 2 ? __bfloat1622float2(row[pair]) : make_float2(0.f, 0.f);
#pragma unroll
        for (int g = 0; g < GROUP; ++g) {
          acc[g][2 * m] += w[g] * v.x;
          acc[g][2 * m + 1] += w[g] * v.y;
        }
      }
    }
  }

  const int64_t partials = static_cast<int64_t>(gridDim.x) * kWarps, slot = blockIdx.x * kWarps + warp;
  const int64_t rows = s.batch * s.heads, first_row = b * s.heads + h * GROUP;
  float* partial_acc = p.workspace;
  float* partial_max = partial_acc + rows * partials * value_rank;
  float* partial_sum = partial_max + rows * partials;
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
    const int64_t index = (first_row + g) * partials + slot;
#pragma unroll
    for (int m = 0; m < kValuePairs; ++m) {
      const int channel = 2 * (lane + 32 * m);
      if (channel < value_rank) {
        partial_acc[index * value_rank + channel] = acc[g][2 * m];
        partial_acc[index * value_rank + channel + 1] = acc[g][2 * m + 1];
      }
    }
    if (lane == 0) {
      partial_max[index] = running_max[g];
      partial_sum[index] = running_sum[g];
    }
  }
}

// One block per (sequence, query head): merge the latent partials, attend the exact window, lift the latent
// output through B_V[h] once, combine both branches by their softmax statistics and normalise.
template <int HEAD_DIM>
__global__ void __launch_bounds__(kThreads) low_rank_merge_kernel(LowRankDecodeParams p, int partials) {
  extern __shared__ __align__(16) float merge_shared[];
  const LowRankDecodeShape& s = p.shape;
  const int value_rank = static_cast<int>(s.value_rank), exact = static_cast<int>(s.exact_tokens);
  float* latent = merge_shared;                  // [value_rank]: Σ p·c^V over the latent tokens
  float* query = latent + value_rank;            // [HEAD_DIM], scaled
  float* from_exact = query + HEAD_DIM;          // [HEAD_DIM]: Σ p·v over the exact tokens
  float* exact_weights = from_exact + HEAD_DIM;  // [exact]: scores, then exp(score - max)
  const int64_t row = blockIdx.x, b = row / s.heads, head = row % s.heads;
  const int64_t h = head / (s.heads / s.kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  const int64_t rows = s.batch * s.heads;
  const float* partial_acc = p.workspace;
  const float* partial_max = partial_acc + rows * partials * value_rank;
  const float* partial_sum = partial_max + rows * partials;
  float latent_max = -INFINITY, latent_sum = 0.f;
  for (int i = 0; i < partials; ++i) latent_max = fmaxf(latent_max, partial_max[row * partials + i]);
  if (latent_max != -INFINITY)
    for (int i = 0; i < partials; ++i) {
      const float m = partial_max[row * partials + i];
      if (m != -INFINITY) latent_sum += partial_sum[row * partials + i] * __expf(m - latent_max);
    }
  for (int c = threadIdx.x; c < value_rank; c += kThreads) {
    float value = 0.f;
    if (latent_max != -INFINITY)
      for (int i = 0; i < partials; ++i) {
        const float m = partial_max[row * partials + i];
        if (m != -INFINITY) value += partial_acc[(row * partials + i) * value_rank + c] * __expf(m - latent_max);
      }
    latent[c] = value;
  }
  const __nv_bfloat16* q = reinterpret_cast<const __nv_bfloat16*>(p.q) + row * HEAD_DIM;
  for (int d = threadIdx.x; d < HEAD_DIM; d += kThreads) query[d] = __bfloat162float(q[d]) * p.scale;
  __syncthreads();

  // Exact window: a warp per token for the scores, then a thread per channel for the weighted values.
  const __nv_bfloat16* exact_keys =
      reinterpret_cast<const __nv_bfloat16*>(p.exact_keys) + (b * s.kv_heads + h) * exact * HEAD_DIM;
  const __nv_bfloat16* exact_values =
      reinterpret_cast<const __nv_bfloat16*>(p.exact_values) + (b * s.kv_heads + h) * exact * HEAD_DIM;
  for (int t = warp; t < exact; t += kWarps) {
    float dot = 0.f;
    for (int d = lane; d < HEAD_DIM; d += 32) dot += query[d] * __bfloat162float(exact_keys[t * HEAD_DIM + d]);
    dot = warp_sum(dot);
    if (lane == 0) exact_weights[t] = p.exact_positions[b * exact + t] >= 0 ? dot : -INFINITY;
  }
  __syncthreads();
  float exact_max = -INFINITY;
  for (int t = 0; t < exact; ++t) exact_max = fmaxf(exact_max, exact_weights[t]);
  __syncthreads();  // every thread has read the scores before they become weights
  for (int t = threadIdx.x; t < exact; t += kThreads)
    exact_weights[t] = exact_weights[t] == -INFINITY ? 0.f : __expf(exact_weights[t] - exact_max);
  __syncthreads();
  float exact_sum = 0.f;
  for (int t = 0; t < exact; ++t) exact_sum += exact_weights[t];
  for (int d = threadIdx.x; d < HEAD_DIM; d += kThreads) {
    float value = 0.f;
    for (int t = 0; t < exact; ++t)
      if (exact_weights[t] != 0.f) value += exact_weights[t] * __bfloat162float(exact_values[t * HEAD_DIM + d]);
    from_exact[d] = value;
  }
  __syncthreads();
  const float largest = fmaxf(latent_max, exact_max);
  const float latent_factor = latent_max == -INFINITY ? 0.f : __expf(latent_max - largest);
  const float exact_factor = exact_max == -INFINITY ? 0.f : __expf(exact_max - largest);
  const float total = latent_factor * latent_sum + exact_factor * exact_sum;

  // Lift once: a warp per output channel at a time, lanes over the latent (coalesced rows of B_V[h]).
  const __nv_bfloat16* value_up = reinterpret_cast<const __nv_bfloat16*>(p.value_up) + h * HEAD_DIM * value_rank;
  const __nv_bfloat16* value_bias =
      p.value_bias != nullptr ? reinterpret_cast<const __nv_bfloat16*>(p.value_bias) + h * HEAD_DIM : nullptr;
  __nv_bfloat16* out = reinterpret_cast<__nv_bfloat16*>(p.out) + row * HEAD_DIM;
  for (int d = warp; d < HEAD_DIM; d += kWarps) {
    float lifted = 0.f;
    for (int c = lane; c < value_rank; c += 32) lifted += __bfloat162float(value_up[d * value_rank + c]) * latent[c];
    lifted = warp_sum(lifted);
    if (lane == 0) {
      if (value_bias != nullptr) lifted += __bfloat162float(value_bias[d]) * latent_sum;  // Σ p·bias
      const float value = latent_factor * lifted + exact_factor * from_exact[d];
      out[d] = __float2bfloat16_rn(total > 0.f ? value / total : 0.f);
    }
  }
}

template <int HEAD_DIM, int GROUP>
cudaError_t launch_for(const LowRankDecodeParams& p, cudaStream_t stream) {
  const int rank_pad = padded_rank(p.shape.key_rank);
  const int splits = p.shape.latent_tokens > 0 ? p.splits : 0;
  if (splits > 0) {
    const size_t bytes = chunk_shared_bytes<HEAD_DIM, GROUP>(rank_pad);
    cudaError_t status = cudaFuncSetAttribute(low_rank_chunk_kernel<HEAD_DIM, GROUP>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (status != cudaSuccess) return status;
    const int64_t chunk = (p.shape.latent_tokens + splits - 1) / splits;
    const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(p.shape.batch * p.shape.kv_heads));
    low_rank_chunk_kernel<HEAD_DIM, GROUP><<<grid, kThreads, bytes, stream>>>(p, chunk, rank_pad);
  }
  const size_t merge_bytes = sizeof(float) * (p.shape.value_rank + 2 * HEAD_DIM + p.shape.exact_tokens);
  low_rank_merge_kernel<HEAD_DIM>
      <<<static_cast<unsigned>(p.shape.batch * p.shape.heads), kThreads, merge_bytes, stream>>>(p, splits * kWarps);
  return cudaGetLastError();
}

template <int HEAD_DIM>
cudaError_t launch_for_dim(const LowRankDecodeParams& p, cudaStream_t stream) {
  return dispatch_group(p.shape.heads / p.shape.kv_heads,
                        [&](auto group) { return launch_for<HEAD_DIM, decltype(group)::value>(p, stream); });
}

}  // namespace

bool low_rank_decode_supported(int64_t head_dim, int64_t group, int64_t key_rank, int64_t value_rank) {
  return (head_dim == 64 || head_dim == 128) && group >= 1 && group <= 8 && key_rank >= 2 && key_rank <= kMaxRank &&
         key_rank % 2 == 0 && value_rank >= 2 && value_rank <= kMaxRank && value_rank % 2 == 0;
}

int low_rank_decode_splits(const LowRankDecodeShape& shape, int multiprocessors) {
  // One wave of about three resident blocks per SM (registers allow that many; a partial second wave would
  // nearly double the time), with chunks of at least kMinChunk tokens.
  const int64_t blocks = shape.batch * shape.kv_heads;
  const int64_t filling = 3 * static_cast<int64_t>(multiprocessors) / blocks;
  const int64_t most = std::max<int64_t>(1, (shape.latent_tokens + kMinChunk - 1) / kMinChunk);
  return static_cast<int>(std::clamp<int64_t>(filling, 1, most));
}

int64_t low_rank_decode_workspace_floats(const LowRankDecodeShape& shape, int splits) {
  return shape.batch * shape.heads * static_cast<int64_t>(splits) * kWarps * (shape.value_rank + 2);
}

cudaError_t launch_low_rank_decode_attention_bf16(const LowRankDecodeParams& params, cudaStream_t stream) {
  if (params.shape.batch == 0) return cudaSuccess;
  switch (params.shape.head_dim) {
    case 64:
      return launch_for_dim<64>(params, stream);
    case 128:
      return launch_for_dim<128>(params, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace kvforge::kernels
