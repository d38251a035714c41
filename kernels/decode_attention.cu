#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "kernels/decode_attention.h"
#include "kernels/decode_partials.cuh"
#include "kernels/group_dispatch.h"

namespace kvforge::kernels {
namespace {

constexpr int kThreads = 128;   // 4 warps per (sequence, KV head, chunk)
constexpr int kMinChunk = 256;  // keys per chunk at least, so the merge stays cheap

// One KV head's slots of one sequence, as the chunk kernel reads them.
struct HeadRows {
  const __nv_bfloat16* k;
  const __nv_bfloat16* v;
  const int64_t* positions;
  int64_t slots;
};

struct SharedBuffer {};  // every KV head in the params' one buffer

__device__ inline HeadRows head_rows(const DecodeAttentionParams& p, const SharedBuffer&, int64_t b, int64_t kv_head) {
  const int64_t offset = b * p.batch_stride + kv_head * p.head_stride;
  return {reinterpret_cast<const __nv_bfloat16*>(p.k) + offset, reinterpret_cast<const __nv_bfloat16*>(p.v) + offset,
          p.positions + b * p.positions_stride + kv_head * p.positions_head_stride, p.shape.slots};
}

__device__ inline HeadRows head_rows(const DecodeAttentionParams& p, const DecodeHeadTable& table, int64_t b,
                                     int64_t kv_head) {
  const DecodeHeadSource& source = table.heads[kv_head];
  return {reinterpret_cast<const __nv_bfloat16*>(source.k) + b * source.batch_stride,
          reinterpret_cast<const __nv_bfloat16*>(source.v) + b * source.batch_stride,
          source.positions + b * source.positions_stride, min(source.slots, p.shape.slots)};
}

// Per (sequence, KV head, chunk): for each of the GROUP query heads, the unnormalised output over the
// chunk's keys plus its softmax max and sum, written to the workspace for merge_chunk_partials.
//
// Keys stream from global memory straight into registers: a "team" of HEAD_DIM/8 lanes reads one key row
// with 16-byte loads (8 channels per lane), so a warp covers 32/(HEAD_DIM/8) keys at once and each lane
// keeps its 8 channels of every query head, of the running output and of the loaded rows in registers.
// kUnroll rows per team are loaded before any is used, to keep enough bytes in flight.
// Sources: SharedBuffer, or a DecodeHeadTable (a __grid_constant__ parameter, so indexing it by head reads the
// parameter space instead of copying the table to every thread).
template <int HEAD_DIM, int GROUP, typename Sources>
__global__ void __launch_bounds__(kThreads)
    decode_chunk_kernel(const DecodeAttentionParams p, int64_t chunk, const __grid_constant__ Sources sources) {
  constexpr int kTeamLanes = HEAD_DIM / 8;
  constexpr int kTeamsPerWarp = 32 / kTeamLanes;
  constexpr int kTeams = kThreads / 32 * kTeamsPerWarp;
  constexpr int kUnroll = GROUP >= 8 ? 2 : 4;
  const DecodeAttentionShape& shape = p.shape;
  const int split = blockIdx.x;
  const int64_t b = blockIdx.y / shape.kv_heads, kv_head = blockIdx.y % shape.kv_heads;
  const HeadRows rows = head_rows(p, sources, b, kv_head);
  const int64_t begin = split * chunk, end = min(begin + chunk, rows.slots);
  if (begin >= end) {
    post_empty_chunk<GROUP>(p.workspace, shape.batch * shape.heads, p.splits, split, b * shape.heads + kv_head * GROUP,
                            HEAD_DIM);
    return;
  }
  const int lane = threadIdx.x % 32, team = threadIdx.x / kTeamLanes, channel = (lane % kTeamLanes) * 8;

  float query[GROUP][8], out[GROUP][8], running_max[GROUP], running_sum[GROUP];
  const __nv_bfloat16* q_rows =
      reinterpret_cast<const __nv_bfloat16*>(p.q) + (b * shape.heads + kv_head * GROUP) * HEAD_DIM;
  start_query_group<HEAD_DIM, GROUP>(q_rows, channel, p.scale, query, out, running_max, running_sum);

  const __nv_bfloat16* k_base = rows.k + channel;
  const __nv_bfloat16* v_base = rows.v + channel;
  const int64_t* positions = rows.positions;
  const DecodeWindow window = p.window;
  const int64_t query_position = window.window > 0 ? p.query_positions[b] : 0;

  // The trip count is the same for every lane (shuffles below need the whole warp); slots past the
  // chunk are loaded by nobody and attended by nobody.
  for (int64_t base = begin; base < end; base += static_cast<int64_t>(kTeams) * kUnroll) {
    uint4 k_rows[kUnroll], v_rows[kUnroll];
    bool attended[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t slot = base + team + static_cast<int64_t>(u) * kTeams;
      k_rows[u] = v_rows[u] = make_uint4(0, 0, 0, 0);
      // Rows are fetched without waiting for their positions, so both loads are in flight together.
      const int64_t position = slot < end ? positions[slot] : -1;
      if (slot < end) {
        k_rows[u] = *reinterpret_cast<const uint4*>(k_base + slot * HEAD_DIM);
        v_rows[u] = *reinterpret_cast<const uint4*>(v_base + slot * HEAD_DIM);
      }
      attended[u] =
          position >= 0 && (window.window == 0 || query_position - position < window.window || position < window.sink);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)  // whatever an unattended slot holds (even NaN) must not reach the output
      if (!attended[u]) k_rows[u] = v_rows[u] = make_uint4(0, 0, 0, 0);
    // Scores of the kUnroll rows for every query head, summed across the team's lanes.
    float scores[kUnroll][GROUP];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float key[8];
      unpack_bf16(k_rows[u], key);
      team_scores<GROUP, kTeamLanes>(query, key, attended[u], scores[u]);
    }
    online_softmax_step<GROUP, kUnroll>(
        scores, [&](int u, float(&row)[8]) { unpack_bf16(v_rows[u], row); }, out, running_max, running_sum);
  }

  post_chunk_partials<HEAD_DIM, GROUP, kTeams, kThreads>(out, running_max, running_sum, team, lane % kTeamLanes == 0,
                                                         channel, p.workspace, shape.batch * shape.heads, p.splits,
                                                         split, b * shape.heads + kv_head * GROUP);
}

// The block's maximum or sum of one value per thread (blockDim.x a multiple of 32, at most 1024).
template <bool MAXIMUM>
__device__ float block_reduce(float value) {
  __shared__ float per_warp[32];
  auto combine = [](float a, float b) { return MAXIMUM ? fmaxf(a, b) : a + b; };
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) value = combine(value, __shfl_xor_sync(0xffffffffu, value, offset));
  if (threadIdx.x % 32 == 0) per_warp[threadIdx.x / 32] = value;
  __syncthreads();
  value = per_warp[0];
  for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) value = combine(value, per_warp[w]);
  __syncthreads();  // per_warp is reused by the next call
  return value;
}

}  // namespace

__global__ void merge_chunk_partials(const float* workspace, int64_t rows, int splits, int64_t head_dim,
                                     __nv_bfloat16* out) {
  // The chunks' weights exp(max_s − max) are computed once each, in parallel, into shared memory; then every channel
  // sums its chunks' outputs with loads that do not wait on one another (serial loops over the chunks' statistics made
  // this kernel a third of a batch-1 decode).
  extern __shared__ float weight[];  // [splits]
  const int64_t row = blockIdx.x;
  const float* partial_out = workspace + row * splits * head_dim;
  const float* partial_max = workspace + rows * splits * head_dim + row * splits;
  const float* partial_sum = workspace + rows * splits * (head_dim + 1) + row * splits;
  float largest = -INFINITY;
  for (int s = threadIdx.x; s < splits; s += blockDim.x) largest = fmaxf(largest, partial_max[s]);
  largest = block_reduce<true>(largest);
  float total = 0.f;
  for (int s = threadIdx.x; s < splits; s += blockDim.x) {
    const float m = partial_max[s];
    weight[s] = m == -INFINITY ? 0.f : __expf(m - largest);  // an empty chunk's output is never read
    total += partial_sum[s] * weight[s];
  }
  total = block_reduce<false>(total);
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float value = 0.f;
#pragma unroll 8
    for (int s = 0; s < splits; ++s)
      if (weight[s] != 0.f) value += partial_out[s * head_dim + d] * weight[s];
    out[row * head_dim + d] = __float2bfloat16_rn(total > 0.f ? value / total : 0.f);
  }
}

namespace {

template <int HEAD_DIM, int GROUP, typename Sources>
cudaError_t launch_for(const DecodeAttentionParams& p, const Sources& sources, cudaStream_t stream) {
  const int64_t chunk = (p.shape.slots + p.splits - 1) / p.splits;
  const dim3 grid(static_cast<unsigned>(p.splits), static_cast<unsigned>(p.shape.batch * p.shape.kv_heads));
  decode_chunk_kernel<HEAD_DIM, GROUP, Sources><<<grid, kThreads, 0, stream>>>(p, chunk, sources);
  merge_chunk_partials<<<static_cast<unsigned>(p.shape.batch * p.shape.heads), HEAD_DIM, merge_shared_bytes(p.splits),
                         stream>>>(p.workspace, p.shape.batch * p.shape.heads, p.splits, HEAD_DIM,
                                   reinterpret_cast<__nv_bfloat16*>(p.out));
  return cudaGetLastError();
}

template <int HEAD_DIM, typename Sources>
cudaError_t launch_for_dim(const DecodeAttentionParams& p, const Sources& sources, cudaStream_t stream) {
  return dispatch_group(p.shape.heads / p.shape.kv_heads,
                        [&](auto group) { return launch_for<HEAD_DIM, decltype(group)::value>(p, sources, stream); });
}

template <typename Sources>
cudaError_t launch_decode(const DecodeAttentionParams& params, const Sources& sources, cudaStream_t stream) {
  if (params.shape.batch == 0 || params.shape.slots == 0) return cudaSuccess;
  switch (params.shape.head_dim) {
    case 64:
      return launch_for_dim<64>(params, sources, stream);
    case 128:
      return launch_for_dim<128>(params, sources, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

bool decode_attention_supported(int64_t head_dim, int64_t group) {
  return (head_dim == 64 || head_dim == 128) && group >= 1 && group <= 8;
}

int decode_attention_splits(const DecodeAttentionShape& shape, int multiprocessors) {
  // Measured on an H100 (kvforge bench decode --splits): about four blocks fit an SM at once, and a grid that spills
  // a few blocks into a second wave pays for a whole one (batch 8 × 4k: 9 splits 95 µs, 8 splits 70 µs). So the
  // splits come in whole waves: as many as fill one without spilling, times enough waves for chunks of about 1024
  // keys, and never chunks under 256 keys (the merge would dominate).
  const int64_t blocks = shape.batch * shape.kv_heads;
  const int64_t per_wave = std::max<int64_t>(1, 4 * static_cast<int64_t>(multiprocessors) / blocks);
  const int64_t long_chunks = (shape.slots + 1023) / 1024;
  const int64_t waves = std::max<int64_t>(1, (long_chunks + per_wave - 1) / per_wave);
  const int64_t most = std::max<int64_t>(1, (shape.slots + kMinChunk - 1) / kMinChunk);
  return static_cast<int>(std::clamp<int64_t>(per_wave * waves, 1, most));
}

int64_t decode_attention_workspace_floats(const DecodeAttentionShape& shape, int splits) {
  return shape.batch * shape.heads * splits * (shape.head_dim + 2);
}

cudaError_t launch_decode_attention_bf16(const DecodeAttentionParams& params, cudaStream_t stream) {
  return launch_decode(params, SharedBuffer{}, stream);
}

cudaError_t launch_decode_attention_by_head_bf16(const DecodeAttentionParams& params, const DecodeHeadTable& table,
                                                 cudaStream_t stream) {
  if (params.shape.kv_heads > kMaxDecodeTableHeads) return cudaErrorInvalidValue;
  return launch_decode(params, table, stream);
}

}  // namespace kvforge::kernels
