#pragma once
// What the flash-decoding kernels share (decode_attention.cu, quantized_decode_attention.cu): a row's scores across a
// team of lanes, the online-softmax step, the end of a chunk block, which merges its teams' online-softmax states and
// writes the chunk's partial output, maximum and sum per query head to the workspace, and the merge of those partials.
// Workspace layout for `rows` = batch × heads:
//   out [rows, splits, head_dim] | max [rows, splits] | sum [rows, splits]  (floats)
#include <cuda_bf16.h>

#include <cstdint>

namespace kvforge::kernels {

// 8 bf16 channels, as one 16-byte load brings them, in floats.
__device__ inline void unpack_bf16(const uint4& packed, float (&row)[8]) {
  const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&packed);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 pair = __bfloat1622float2(pairs[i]);
    row[2 * i] = pair.x;
    row[2 * i + 1] = pair.y;
  }
}

// This lane's 8 channels of the GROUP query rows starting at q_rows (HEAD_DIM apart), scaled, and an empty
// online-softmax state for each.
template <int HEAD_DIM, int GROUP>
__device__ void start_query_group(const __nv_bfloat16* q_rows, int channel, float scale, float (&query)[GROUP][8],
                                  float (&out)[GROUP][8], float (&running_max)[GROUP], float (&running_sum)[GROUP]) {
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
    unpack_bf16(*reinterpret_cast<const uint4*>(q_rows + g * HEAD_DIM + channel), query[g]);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      query[g][e] *= scale;
      out[g][e] = 0.f;
    }
    running_max[g] = -INFINITY;
    running_sum[g] = 0.f;
  }
}

// One key row's score for each of GROUP query heads: this lane's 8 channels against each query, summed over the
// TEAM_LANES lanes that hold the row; -inf for a row that is not attended.
template <int GROUP, int TEAM_LANES>
__device__ void team_scores(const float (&query)[GROUP][8], const float (&key)[8], bool attended,
                            float (&scores)[GROUP]) {
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
    float score = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) score += query[g][e] * key[e];
#pragma unroll
    for (int offset = TEAM_LANES / 2; offset > 0; offset >>= 1) score += __shfl_xor_sync(0xffffffffu, score, offset);
    scores[g] = attended ? score : -INFINITY;
  }
}

// One online-softmax step over UNROLL rows: a single rescale of the running output per query head. values(u, row)
// writes row u's 8 value channels of this lane as floats (0 for an unattended row).
template <int GROUP, int UNROLL, typename Values>
__device__ void online_softmax_step(const float (&scores)[UNROLL][GROUP], Values&& values, float (&out)[GROUP][8],
                                    float (&running_max)[GROUP], float (&running_sum)[GROUP]) {
#pragma unroll
  for (int g = 0; g < GROUP; ++g) {
    float new_max = running_max[g];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) new_max = fmaxf(new_max, scores[u][g]);
    if (new_max == -INFINITY) continue;                     // nothing attended yet
    const float factor = __expf(running_max[g] - new_max);  // 0 while the old max is -inf
    float sum = running_sum[g] * factor;
#pragma unroll
    for (int e = 0; e < 8; ++e) out[g][e] *= factor;
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const float weight = __expf(scores[u][g] - new_max);  // 0 for unattended rows
      sum += weight;
      float row[8];
      values(u, row);
#pragma unroll
      for (int e = 0; e < 8; ++e) out[g][e] += weight * row[e];
    }
    running_sum[g] = sum;
    running_max[g] = new_max;
  }
}

// The TEAMS online-softmax states of a block (each team's maximum, sum and unnormalised output per query head, in
// shared memory), merged into the chunk's partial output, maximum and sum per query head in the workspace. Called by
// every thread of a THREADS-thread block after the states are written and synchronised.
template <int HEAD_DIM, int GROUP, int TEAMS, int THREADS>
__device__ void combine_team_partials(const float (&team_max)[TEAMS][GROUP], const float (&team_sum)[TEAMS][GROUP],
                                      const float (&team_out)[TEAMS][GROUP][HEAD_DIM], float* workspace, int64_t rows,
                                      int splits, int split, int64_t first_row) {
  float* partial_out = workspace;
  float* partial_max = partial_out + rows * splits * HEAD_DIM;
  float* partial_sum = partial_max + rows * splits;
  for (int e = threadIdx.x; e < GROUP * HEAD_DIM; e += THREADS) {
    const int g = e / HEAD_DIM, d = e % HEAD_DIM;
    float largest = -INFINITY;
#pragma unroll
    for (int t = 0; t < TEAMS; ++t) largest = fmaxf(largest, team_max[t][g]);
    float value = 0.f, total = 0.f;
    if (largest != -INFINITY) {
#pragma unroll
      for (int t = 0; t < TEAMS; ++t) {
        const float factor = __expf(team_max[t][g] - largest);
        value += team_out[t][g][d] * factor;
        total += team_sum[t][g] * factor;
      }
    }
    partial_out[((first_row + g) * splits + split) * HEAD_DIM + d] = value;
    if (d == 0) {
      partial_max[(first_row + g) * splits + split] = largest;
      partial_sum[(first_row + g) * splits + split] = total;
    }
  }
}

// Called by every thread of a THREADS-thread block; `out`, `running_max`, `running_sum` are this lane's state for
// its 8 channels (starting at `channel`) of each of GROUP query heads, shared by the TEAMS teams.
template <int HEAD_DIM, int GROUP, int TEAMS, int THREADS>
__device__ void post_chunk_partials(const float (&out)[GROUP][8], const float (&running_max)[GROUP],
                                    const float (&running_sum)[GROUP], int team, bool team_leader, int channel,
                                    float* workspace, int64_t rows, int splits, int split, int64_t first_row) {
  __shared__ float team_max[TEAMS][GROUP], team_sum[TEAMS][GROUP];
  __shared__ __align__(16) float team_out[TEAMS][GROUP][HEAD_DIM];
  if (team_leader) {
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
      team_max[team][g] = running_max[g];
      team_sum[team][g] = running_sum[g];
    }
  }
#pragma unroll
  for (int g = 0; g < GROUP; ++g)
#pragma unroll
    for (int e = 0; e < 8; ++e) team_out[team][g][channel + e] = out[g][e];
  __syncthreads();
  combine_team_partials<HEAD_DIM, GROUP, TEAMS, THREADS>(team_max, team_sum, team_out, workspace, rows, splits, split,
                                                         first_row);
}

// A chunk with no slots to read (past a short head's end): only its maximum, -inf, which the merge skips.
template <int GROUP>
__device__ void post_empty_chunk(float* workspace, int64_t rows, int splits, int split, int64_t first_row,
                                 int head_dim) {
  float* partial_max = workspace + rows * splits * head_dim;
  float* partial_sum = partial_max + rows * splits;
  if (threadIdx.x < GROUP) {
    partial_max[(first_row + threadIdx.x) * splits + split] = -INFINITY;
    partial_sum[(first_row + threadIdx.x) * splits + split] = 0.f;
  }
}

// One block per (sequence, query head), head_dim threads, merge_shared_bytes(splits) of dynamic shared memory: chunks
// weighted by exp(max_s - max) and normalised by the total; a row with nothing attended gets zeros.
__global__ void merge_chunk_partials(const float* workspace, int64_t rows, int splits, int64_t head_dim,
                                     __nv_bfloat16* out);

// The chunk weights, padded to whole groups of 8: the merge's unrolled loop reads them 16 bytes at a time.
inline size_t merge_shared_bytes(int splits) { return static_cast<size_t>((splits + 7) / 8 * 8) * sizeof(float); }

}  // namespace kvforge::kernels
