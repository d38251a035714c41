#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/decode_partials.cuh"
#include "kernels/group_dispatch.h"
#include "kernels/quantized_decode_attention.h"

namespace kvforge::kernels {
namespace {

constexpr int kThreads = 128;

// One row as loaded. A quantized token: packed codes (this lane's 8 channels, lowest channel in the lowest bits), the
// key group's 8 fp16 scales and minimums in `first` / `second`, the value run's scale and minimum. A recent token:
// its 8 bf16 key channels in `first`, value channels in `second`. Sharing the two vectors saves registers, which
// bound how many rows are in flight.
struct RawRow {
  uint4 first, second;
  uint32_t key_codes, value_codes;
  __half value_scale, value_minimum;
};

template <int BITS>
__device__ void dequantize(uint32_t codes, const uint4& scale, const uint4& minimum, float (&row)[8]) {
  const __half2* scales = reinterpret_cast<const __half2*>(&scale);
  const __half2* minimums = reinterpret_cast<const __half2*>(&minimum);
  constexpr uint32_t kMask = (1u << BITS) - 1;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 s = __half22float2(scales[i]), m = __half22float2(minimums[i]);
    row[2 * i] = static_cast<float>((codes >> (BITS * 2 * i)) & kMask) * s.x + m.x;
    row[2 * i + 1] = static_cast<float>((codes >> (BITS * (2 * i + 1))) & kMask) * s.y + m.y;
  }
}

// Per (sequence, KV head, chunk), as decode_chunk_kernel: teams of HEAD_DIM/8 lanes read one row each (8 channels per
// lane), kUnroll rows per team in flight, an online softmax per query head of the group.
template <int HEAD_DIM, int GROUP, int BITS>
__global__ void __launch_bounds__(kThreads) quantized_chunk_kernel(QuantizedDecodeParams p, int64_t chunk) {
  constexpr int kTeamLanes = HEAD_DIM / 8;
  constexpr int kTeams = kThreads / 32 * (32 / kTeamLanes);
  constexpr int kUnroll = GROUP >= 8 ? 2 : 4;
  const DecodeAttentionShape& shape = p.shape;
  const int split = blockIdx.x;
  const int64_t b = blockIdx.y / shape.kv_heads, kv_head = blockIdx.y % shape.kv_heads;
  const int64_t begin = split * chunk, end = min(begin + chunk, shape.slots);
  const int lane = threadIdx.x % 32, team = threadIdx.x / kTeamLanes, channel = (lane % kTeamLanes) * 8;

  float query[GROUP][8], out[GROUP][8], running_max[GROUP], running_sum[GROUP];
  const __nv_bfloat16* q_rows =
      reinterpret_cast<const __nv_bfloat16*>(p.q) + (b * shape.heads + kv_head * GROUP) * HEAD_DIM;
  start_query_group<HEAD_DIM, GROUP>(q_rows, channel, p.scale, query, out, running_max, running_sum);

  const int64_t head = b * shape.kv_heads + kv_head, quantized = p.quantized, recent = shape.slots - quantized;
  constexpr int kRowBytes = HEAD_DIM * BITS / 8;  // a lane's 8 channels take BITS bytes
  const int group_shift = __ffs(p.group) - 1;     // the group is a power of two
  const uint8_t* key_codes = p.key_codes + head * quantized * kRowBytes + channel * BITS / 8;
  const uint8_t* value_codes = p.value_codes + head * quantized * kRowBytes + channel * BITS / 8;
  const __half* key_scale =
      reinterpret_cast<const __half*>(p.key_scale) + head * (quantized / p.group) * HEAD_DIM + channel;
  const __half* key_minimum =
      reinterpret_cast<const __half*>(p.key_minimum) + head * (quantized / p.group) * HEAD_DIM + channel;
  const int value_groups = HEAD_DIM / p.group;
  const __half* value_scale =
      reinterpret_cast<const __half*>(p.value_scale) + head * quantized * value_groups + channel / p.group;
  const __half* value_minimum =
      reinterpret_cast<const __half*>(p.value_minimum) + head * quantized * value_groups + channel / p.group;
  const __nv_bfloat16* recent_keys =
      reinterpret_cast<const __nv_bfloat16*>(p.recent_keys) + head * recent * HEAD_DIM + channel;
  const __nv_bfloat16* recent_values =
      reinterpret_cast<const __nv_bfloat16*>(p.recent_values) + head * recent * HEAD_DIM + channel;
  const int64_t* positions = p.positions + b * shape.slots;

  // A key group's scales serve every row of the group: a lane reloads them only when its rows cross into the next.
  int64_t cached_group = -1;
  uint4 cached_scale = make_uint4(0, 0, 0, 0), cached_minimum = make_uint4(0, 0, 0, 0);
  for (int64_t base = begin; base < end; base += static_cast<int64_t>(kTeams) * kUnroll) {
    RawRow raw[kUnroll];
    bool attended[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t slot = base + team + static_cast<int64_t>(u) * kTeams;
      attended[u] = slot < end && positions[slot] >= 0;
      if (slot < end && slot < quantized) {
        const uint8_t* k = key_codes + slot * kRowBytes;
        const uint8_t* v = value_codes + slot * kRowBytes;
        if constexpr (BITS == 4) {
          raw[u].key_codes = *reinterpret_cast<const uint32_t*>(k);
          raw[u].value_codes = *reinterpret_cast<const uint32_t*>(v);
        } else {
          raw[u].key_codes = *reinterpret_cast<const uint16_t*>(k);
          raw[u].value_codes = *reinterpret_cast<const uint16_t*>(v);
        }
        const int64_t key_group = slot >> group_shift;
        if (key_group != cached_group) {
          cached_scale = *reinterpret_cast<const uint4*>(key_scale + key_group * HEAD_DIM);
          cached_minimum = *reinterpret_cast<const uint4*>(key_minimum + key_group * HEAD_DIM);
          cached_group = key_group;
        }
        raw[u].first = cached_scale;
        raw[u].second = cached_minimum;
        raw[u].value_scale = value_scale[slot * value_groups];
        raw[u].value_minimum = value_minimum[slot * value_groups];
      } else if (slot < end) {
        raw[u].first = *reinterpret_cast<const uint4*>(recent_keys + (slot - quantized) * HEAD_DIM);
        raw[u].second = *reinterpret_cast<const uint4*>(recent_values + (slot - quantized) * HEAD_DIM);
      }
    }
    float scores[kUnroll][GROUP];
    float values[kUnroll][8];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t slot = base + team + static_cast<int64_t>(u) * kTeams;
      float key[8];
      if (!attended[u]) {  // whatever an unattended slot holds must not reach the output
#pragma unroll
        for (int e = 0; e < 8; ++e) key[e] = values[u][e] = 0.f;
      } else if (slot < quantized) {
        dequantize<BITS>(raw[u].key_codes, raw[u].first, raw[u].second, key);
        const float s = __half2float(raw[u].value_scale), m = __half2float(raw[u].value_minimum);
#pragma unroll
        for (int e = 0; e < 8; ++e)
          values[u][e] = static_cast<float>((raw[u].value_codes >> (BITS * e)) & ((1u << BITS) - 1)) * s + m;
      } else {
        unpack_bf16(raw[u].first, key);
        unpack_bf16(raw[u].second, values[u]);
      }
      team_scores<GROUP, kTeamLanes>(query, key, attended[u], scores[u]);
    }
    online_softmax_step<GROUP, kUnroll>(
        scores,
        [&](int u, float(&row)[8]) {
#pragma unroll
          for (int e = 0; e < 8; ++e) row[e] = values[u][e];
        },
        out, running_max, running_sum);
  }
  post_chunk_partials<HEAD_DIM, GROUP, kTeams, kThreads>(out, running_max, running_sum, team, lane % kTeamLanes == 0,
                                                         channel, p.workspace, shape.batch * shape.heads, p.splits,
                                                         split, b * shape.heads + kv_head * GROUP);
}

template <int HEAD_DIM, int GROUP, int BITS>
cudaError_t launch_for(const QuantizedDecodeParams& p, cudaStream_t stream) {
  const int64_t chunk = (p.shape.slots + p.splits - 1) / p.splits;
  const dim3 grid(static_cast<unsigned>(p.splits), static_cast<unsigned>(p.shape.batch * p.shape.kv_heads));
  quantized_chunk_kernel<HEAD_DIM, GROUP, BITS><<<grid, kThreads, 0, stream>>>(p, chunk);
  merge_chunk_partials<<<static_cast<unsigned>(p.shape.batch * p.shape.heads), HEAD_DIM, 0, stream>>>(
      p.workspace, p.shape.batch * p.shape.heads, p.splits, HEAD_DIM, reinterpret_cast<__nv_bfloat16*>(p.out));
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_quantized_decode_attention_bf16(const QuantizedDecodeParams& params, cudaStream_t stream) {
  if (params.shape.batch == 0 || params.shape.slots == 0) return cudaSuccess;
  if ((params.bits != 2 && params.bits != 4) || params.group < 8 || params.group % 8 != 0 ||
      (params.group & (params.group - 1)) != 0 || params.shape.head_dim % params.group != 0 ||
      params.quantized % params.group != 0)
    return cudaErrorInvalidValue;
  auto by_group = [&](auto head_dim) {
    return dispatch_group(params.shape.heads / params.shape.kv_heads, [&](auto group) {
      constexpr int kDim = decltype(head_dim)::value, kGroup = decltype(group)::value;
      return params.bits == 4 ? launch_for<kDim, kGroup, 4>(params, stream)
                              : launch_for<kDim, kGroup, 2>(params, stream);
    });
  };
  switch (params.shape.head_dim) {
    case 64:
      return by_group(std::integral_constant<int, 64>{});
    case 128:
      return by_group(std::integral_constant<int, 128>{});
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace kvforge::kernels
