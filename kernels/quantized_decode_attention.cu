#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/copy_async.cuh"
#include "kernels/decode_partials.cuh"
#include "kernels/group_dispatch.h"
#include "kernels/mma_16816.cuh"
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

// ---- The tensor-core kernel ----------------------------------------------------------------------------------------
// Per (sequence, KV head, chunk), four warps each take a run of the chunk's 16-token tiles, streamed through three
// shared-memory stages per warp with cp.async (codes, scales and positions; copies in flight hold no registers, which
// bound how many warps hide the latency). With lane = 4i + j:
//
// Scores S[head][token] = Q'·codes (m16n8k16; M = the query heads padded to 16, K = channels, N = 8 tokens). A key
// group's scales are folded into the query (Q' = q·s[c]) and its minimums into a bias per head, so a key code
// becomes an MMA operand with one shift and one mask: a code n or'ed into 0x4300 reads as the bf16 128 + n, and the
// bias also takes away 128·ΣQ'. Lane (i, j) reads token i of each 8-token half, its channels [j·D/4, (j+1)·D/4) as one
// contiguous run of codes; the MMA's K index is mapped onto those channels in the order the shift and mask yield
// them, and Q' is packed in the same order.
//
// Values O^T[channel][head] = V^T·P^T (M = 16 channels, K = 16 tokens, N = 8 heads). The scores' accumulator layout
// (lane holds head i, tokens 2j, 2j + 1 of each half) is the layout of P^T as a B operand, so the weights never
// leave registers. Lane (i, j) dequantizes tokens 2j, 2j + 1, 2j + 8, 2j + 9 of its channels [i·D/8, (i+1)·D/8),
// inside one value group (group >= D/8), so one scale per token, two tokens per bf16 pair.

constexpr uint32_t kBf16Base = 0x43004300u;  // bf16 128 in both halves: or'ed with a code n < 128 it reads 128 + n

// Halves of x and y (0 = low, 1 = high) as one bf16 pair: x's in the low half, y's in the high one.
template <int HX, int HY>
__device__ __forceinline__ uint32_t pair_halves(uint32_t x, uint32_t y) {
  return __byte_perm(x, y, (HX ? 0x32 : 0x10) | ((HY ? 0x76 : 0x54) << 8));
}

__device__ __forceinline__ uint32_t pack_bf16(float low, float high) {
  const __nv_bfloat162 pair = __floats2bfloat162_rn(low, high);
  return *reinterpret_cast<const uint32_t*>(&pair);
}

// One 16-token tile of codes as a warp stages it in shared memory (byte offsets): key and value codes, the value
// scales and minimums (value groups >= 16 channels, so at most head_dim / 16 per token), positions, and the tile's
// key-group scales and minimums.
template <int HEAD_DIM, int BITS>
struct StageLayout {
  static constexpr int kRowBytes = HEAD_DIM * BITS / 8;
  static constexpr int kValueScaleBytes = 16 * (HEAD_DIM / 16) * 2;
  static constexpr int kKeys = 0;
  static constexpr int kValues = kKeys + 16 * kRowBytes;
  static constexpr int kValueScale = kValues + 16 * kRowBytes;
  static constexpr int kValueMinimum = kValueScale + kValueScaleBytes;
  static constexpr int kPositions = kValueMinimum + kValueScaleBytes;
  static constexpr int kKeyScale = kPositions + 16 * 8;
  static constexpr int kKeyMinimum = kKeyScale + HEAD_DIM * 2;
  static constexpr int kBytes = kKeyMinimum + HEAD_DIM * 2;
  static_assert(kBytes % 16 == 0);
};

// One 16-token tile's quantized rows as lane (i, j) reads them from its stage: its key codes of tokens i and 8 + i, its
// value codes, scales and minimums of tokens 2j, 2j + 1, 2j + 8, 2j + 9, and whether those four are attended.
template <int HEAD_DIM, int BITS>
struct QuantizedTile {
  static constexpr int kKeyWords = HEAD_DIM / 4 * BITS / 32;
  static constexpr int kValueBytes = HEAD_DIM / 8 * BITS / 8;
  static constexpr int kValueWords = (kValueBytes + 3) / 4;
  uint32_t keys[2][kKeyWords];
  uint32_t values[4][kValueWords];
  __half value_scale[4], value_minimum[4];
  bool attended[4];
};

template <int HEAD_DIM, int GROUP, int BITS>
__global__ void __launch_bounds__(kThreads, 4) quantized_mma_chunk_kernel(QuantizedDecodeParams p, int64_t chunk) {
  using Tile = QuantizedTile<HEAD_DIM, BITS>;
  constexpr int kKeyChannels = HEAD_DIM / 4, kValueChannels = HEAD_DIM / 8;  // a lane's, for scores / values
  constexpr int kCodesPerWord = 32 / BITS, kHalfWord = kCodesPerWord / 2;
  constexpr int kTilesPerWord = kCodesPerWord / 4;
  constexpr int kKTiles = HEAD_DIM / 16, kMTiles = HEAD_DIM / 16;
  constexpr uint32_t kPairMask = ((1u << BITS) - 1) * 0x00010001u;
  constexpr int kRowBytes = HEAD_DIM * BITS / 8;
  constexpr int kWarps = kThreads / 32;
  const DecodeAttentionShape& shape = p.shape;
  const int split = blockIdx.x;
  const int64_t b = blockIdx.y / shape.kv_heads, kv_head = blockIdx.y % shape.kv_heads;
  const int64_t first_row = b * shape.heads + kv_head * GROUP;
  const int64_t begin = split * chunk, end = min(begin + chunk, shape.slots);
  if (begin >= end) {
    post_empty_chunk<GROUP>(p.workspace, shape.batch * shape.heads, p.splits, split, first_row, HEAD_DIM);
    return;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, i = lane / 4, j = lane % 4;
  const int64_t head = b * shape.kv_heads + kv_head, quantized = p.quantized, recent = shape.slots - quantized;
  const uint8_t* key_codes = p.key_codes + head * quantized * kRowBytes;
  const uint8_t* value_codes = p.value_codes + head * quantized * kRowBytes;
  const int64_t key_groups = quantized / p.group;
  const auto* key_scale = reinterpret_cast<const uint8_t*>(p.key_scale) + head * key_groups * HEAD_DIM * 2;
  const auto* key_minimum = reinterpret_cast<const uint8_t*>(p.key_minimum) + head * key_groups * HEAD_DIM * 2;
  const int value_groups = HEAD_DIM / p.group, value_group = i * kValueChannels / p.group;
  const auto* value_scale = reinterpret_cast<const uint8_t*>(p.value_scale) + head * quantized * value_groups * 2;
  const auto* value_minimum = reinterpret_cast<const uint8_t*>(p.value_minimum) + head * quantized * value_groups * 2;
  const __nv_bfloat16* recent_keys =
      reinterpret_cast<const __nv_bfloat16*>(p.recent_keys) + head * recent * HEAD_DIM + j * kKeyChannels;
  const __nv_bfloat16* recent_values =
      reinterpret_cast<const __nv_bfloat16*>(p.recent_values) + head * recent * HEAD_DIM + i * kValueChannels;
  const int64_t* positions = p.positions + b * shape.slots;
  const int group_shift = __ffs(p.group) - 1;

  // Query head i (zero for the padding rows i >= GROUP), this lane's key channels: read again at each key group (from
  // L1) rather than held, since registers bound how many warps hide the memory latency.
  const __nv_bfloat16* query =
      reinterpret_cast<const __nv_bfloat16*>(p.q) + (first_row + min(i, GROUP - 1)) * HEAD_DIM + j * kKeyChannels;
  // The scores' A operand for the current key group (rows i; rows i + 8 are padding) and head i's bias. k-tile
  // t = kTilesPerWord·w + τ pairs this lane's channels (W·w + 2τ, W·w + 2τ + W/2) and (W·w + 2τ + 1, W·w + 2τ + 1 +
  // W/2), W codes to a word: the order the shift-and-mask in the scores loop reads them.
  uint32_t a[kKTiles][2];
  float bias = 0.f;
  int64_t loaded_group = -2;  // -1: the bf16 recent tokens (no scale)
  // key_group < 0: the bf16 recent tokens (no scales); else the group's scales and minimums as staged.
  auto load_query_operands = [&](int64_t key_group, const __half* staged_scale, const __half* staged_minimum) {
    // Q'[c] = q[c]·s[c] rounded to bf16 as the MMA reads it. The MMA adds Σ Q'·(128 + n); the bias takes the part
    // that does not depend on the code, centred on the middle code c0 so Q''s rounding error multiplies |n − c0|
    // (at most half the code range) rather than n: score = Σ Q'·(n − c0) + Σ q·(m + s·c0).
    constexpr float kMiddle = ((1 << BITS) - 1) * 0.5f;
    float part = 0.f;
#pragma unroll
    for (int w = 0; w < Tile::kKeyWords; ++w) {  // the channels of one word of codes: [W·w, W·w + W)
      __half2 scales[kHalfWord], minimums[kHalfWord];
      __nv_bfloat162 queries[kHalfWord];
#pragma unroll
      for (int h = 0; h < kHalfWord / 4; ++h) {
        const uint4 q8 =
            i < GROUP ? *reinterpret_cast<const uint4*>(query + kCodesPerWord * w + 8 * h) : make_uint4(0, 0, 0, 0);
        uint4 s8 = make_uint4(0, 0, 0, 0), m8 = make_uint4(0, 0, 0, 0);
        if (key_group >= 0) {
          s8 = *reinterpret_cast<const uint4*>(staged_scale + j * kKeyChannels + kCodesPerWord * w + 8 * h);
          m8 = *reinterpret_cast<const uint4*>(staged_minimum + j * kKeyChannels + kCodesPerWord * w + 8 * h);
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          queries[4 * h + e] = reinterpret_cast<const __nv_bfloat162*>(&q8)[e];
          scales[4 * h + e] = reinterpret_cast<const __half2*>(&s8)[e];
          minimums[4 * h + e] = reinterpret_cast<const __half2*>(&m8)[e];
        }
      }
      auto fold = [&](int channel) {  // channel within the word
        const __nv_bfloat162 pair = queries[channel / 2];
        const float q = (channel % 2 ? __high2float(pair) : __low2float(pair)) * p.scale;
        if (key_group < 0) return q;
        const __half2 s2 = scales[channel / 2], m2 = minimums[channel / 2];
        const float scale = channel % 2 ? __high2float(s2) : __low2float(s2);
        const float minimum = channel % 2 ? __high2float(m2) : __low2float(m2);
        const float folded = __bfloat162float(__float2bfloat16_rn(q * scale));
        part += q * (minimum + scale * kMiddle) - (128.f + kMiddle) * folded;
        return folded;
      };
#pragma unroll
      for (int tau = 0; tau < kTilesPerWord; ++tau) {
        const int t = kTilesPerWord * w + tau, c = 2 * tau;
        a[t][0] = pack_bf16(fold(c), fold(c + kHalfWord));
        a[t][1] = pack_bf16(fold(c + 1), fold(c + 1 + kHalfWord));
      }
    }
    part += __shfl_xor_sync(0xffffffffu, part, 1);
    part += __shfl_xor_sync(0xffffffffu, part, 2);
    bias = part;
    loaded_group = key_group;
  };

  float o[kMTiles][4];
#pragma unroll
  for (int u = 0; u < kMTiles; ++u) o[u][0] = o[u][1] = o[u][2] = o[u][3] = 0.f;
  float running_max = -INFINITY, running_sum = 0.f;

  // Scores (head i, tokens 2j, 2j + 1 of each 8-token half) are ready in s; masks them, updates the online softmax,
  // rescales the output and returns P^T as the B operand of the value MMA.
  auto softmax_step = [&](float(&s)[2][4], const bool(&attended)[4], uint32_t& p0, uint32_t& p1) {
    float tile_max = -INFINITY;
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        s[n][e] = attended[2 * n + e] ? s[n][e] + bias : -INFINITY;
        tile_max = fmaxf(tile_max, s[n][e]);
      }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
    const float new_max = fmaxf(running_max, tile_max);
    float factor = 1.f, weights[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
    if (new_max != -INFINITY) {
      factor = __expf(running_max - new_max);  // 0 while the old max is -inf
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) weights[n][e] = __expf(s[n][e] - new_max);
      running_max = new_max;
    }
    p0 = pack_bf16(weights[0][0], weights[0][1]);
    p1 = pack_bf16(weights[1][0], weights[1][1]);
    // The sum counts the weights as the MMA reads them (bf16).
    const float2 w0 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&p0));
    const float2 w1 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&p1));
    running_sum = running_sum * factor + w0.x + w0.y + w1.x + w1.y;
    // The output's columns are heads 2j and 2j + 1: their factors live in lanes 4·2j and 4·(2j + 1).
    const float factor_low = __shfl_sync(0xffffffffu, factor, 8 * j),
                factor_high = __shfl_sync(0xffffffffu, factor, 8 * j + 4);
#pragma unroll
    for (int u = 0; u < kMTiles; ++u) {
      o[u][0] *= factor_low;
      o[u][1] *= factor_high;
      o[u][2] *= factor_low;
      o[u][3] *= factor_high;
    }
  };

  // This warp's tiles: a contiguous run of the chunk's 16-token tiles (begin and quantized are multiples of 16).
  const int64_t tiles = (end - begin + 15) / 16, per_warp = (tiles + kWarps - 1) / kWarps;
  int64_t tile = warp * per_warp;
  const int64_t last_tile = min(tiles, tile + per_warp);

  using Stage = StageLayout<HEAD_DIM, BITS>;
  // Starts the copies of the quantized tile at `start` into a stage.
  auto stage_tile = [&](int64_t start, uint8_t* stage) {
    copy_rows_async(stage + Stage::kKeys, key_codes + start * kRowBytes, 16 * kRowBytes, lane);
    copy_rows_async(stage + Stage::kValues, value_codes + start * kRowBytes, 16 * kRowBytes, lane);
    copy_rows_async(stage + Stage::kValueScale, value_scale + start * value_groups * 2, 16 * value_groups * 2, lane);
    copy_rows_async(stage + Stage::kValueMinimum, value_minimum + start * value_groups * 2, 16 * value_groups * 2,
                    lane);
    if (lane < 16) copy_async<8>(stage + Stage::kPositions + 8 * lane, positions + start + lane);
    const int64_t key_group = start >> group_shift;
    copy_rows_async(stage + Stage::kKeyScale, key_scale + key_group * HEAD_DIM * 2, HEAD_DIM * 2, lane);
    copy_rows_async(stage + Stage::kKeyMinimum, key_minimum + key_group * HEAD_DIM * 2, HEAD_DIM * 2, lane);
  };
  // This lane's operands of a staged tile.
  auto read_tile = [&](int64_t start, const uint8_t* stage, Tile& raw) {
#pragma unroll
    for (int n = 0; n < 2; ++n) {
      const uint8_t* row = stage + Stage::kKeys + (8 * n + i) * kRowBytes + j * (kKeyChannels * BITS / 8);
      if constexpr (Tile::kKeyWords == 4) {
        const uint4 v = *reinterpret_cast<const uint4*>(row);
        raw.keys[n][0] = v.x, raw.keys[n][1] = v.y, raw.keys[n][2] = v.z, raw.keys[n][3] = v.w;
      } else if constexpr (Tile::kKeyWords == 2) {
        const uint2 v = *reinterpret_cast<const uint2*>(row);
        raw.keys[n][0] = v.x, raw.keys[n][1] = v.y;
      } else {
        raw.keys[n][0] = *reinterpret_cast<const uint32_t*>(row);
      }
    }
    const auto* staged_positions = reinterpret_cast<const int64_t*>(stage + Stage::kPositions);
    const auto* staged_scale = reinterpret_cast<const __half*>(stage + Stage::kValueScale);
    const auto* staged_minimum = reinterpret_cast<const __half*>(stage + Stage::kValueMinimum);
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const int token = 2 * j + (v & 1) + 8 * (v >> 1);
      raw.attended[v] = start + token < end && staged_positions[token] >= 0;
      const uint8_t* row = stage + Stage::kValues + token * kRowBytes + i * Tile::kValueBytes;
      if constexpr (Tile::kValueBytes == 8) {
        const uint2 c = *reinterpret_cast<const uint2*>(row);
        raw.values[v][0] = c.x, raw.values[v][1] = c.y;
      } else if constexpr (Tile::kValueBytes == 4) {
        raw.values[v][0] = *reinterpret_cast<const uint32_t*>(row);
      } else {
        raw.values[v][0] = *reinterpret_cast<const uint16_t*>(row);
      }
      raw.value_scale[v] = staged_scale[token * value_groups + value_group];
      raw.value_minimum[v] = staged_minimum[token * value_groups + value_group];
    }
  };

  auto quantized_tile = [&](int64_t start, const Tile& raw, const uint8_t* stage) {
    const int64_t key_group = start >> group_shift;
    if (key_group != loaded_group)
      load_query_operands(key_group, reinterpret_cast<const __half*>(stage + Stage::kKeyScale),
                          reinterpret_cast<const __half*>(stage + Stage::kKeyMinimum));
    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int t = 0; t < kKTiles; ++t) {
        const uint32_t word = raw.keys[n][t / kTilesPerWord];
        const int shift = BITS * 2 * (t % kTilesPerWord);
        const uint32_t a_tile[4] = {a[t][0], 0u, a[t][1], 0u};
        mma_16816(s[n], a_tile, ((word >> shift) & kPairMask) | kBf16Base,
                  ((word >> (shift + BITS)) & kPairMask) | kBf16Base);
      }
    uint32_t p0, p1;
    softmax_step(s, raw.attended, p0, p1);
    // Values: per token pair (2j, 2j + 1) and (2j + 8, 2j + 9), element e of this lane's channels as one bf16 pair,
    // dequantized in bf16 (the code's 128 offset subtracted exactly, then one rounded n·s + m).
    // An unattended token's value is 0 (scale and minimum 0), whatever its codes and scales hold.
    __nv_bfloat162 scale[2], minimum[2];
    auto kept = [&](int v, __half x) { return raw.attended[v] ? __half2float(x) : 0.f; };
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      scale[h] =
          __floats2bfloat162_rn(kept(2 * h, raw.value_scale[2 * h]), kept(2 * h + 1, raw.value_scale[2 * h + 1]));
      minimum[h] =
          __floats2bfloat162_rn(kept(2 * h, raw.value_minimum[2 * h]), kept(2 * h + 1, raw.value_minimum[2 * h + 1]));
    }
    const __nv_bfloat162 base = __floats2bfloat162_rn(128.f, 128.f);
    auto value_pair = [&](int h, int element) {
      constexpr int kBitsPerByte = 8;
      const int byte = element * BITS / kBitsPerByte, in_byte = (element * BITS) % kBitsPerByte;
      const int word = byte / 4, at = byte % 4;
      const uint32_t both = __byte_perm(raw.values[2 * h][word], raw.values[2 * h + 1][word],
                                        at | (at << 4) | ((at + 4) << 8) | ((at + 4) << 12));
      const uint32_t biased = ((both >> in_byte) & kPairMask) | kBf16Base;
      const __nv_bfloat162 code = __hsub2(*reinterpret_cast<const __nv_bfloat162*>(&biased), base);
      const __nv_bfloat162 value = __hfma2(code, scale[h], minimum[h]);
      return *reinterpret_cast<const uint32_t*>(&value);
    };
#pragma unroll
    for (int u = 0; u < kMTiles; ++u) {
      const uint32_t v_tile[4] = {value_pair(0, 2 * u), value_pair(0, 2 * u + 1), value_pair(1, 2 * u),
                                  value_pair(1, 2 * u + 1)};
      mma_16816(o[u], v_tile, p0, p1);
    }
  };

  // Quantized tiles stream through kStages shared-memory stages per warp: the copies of the next kStages − 1 tiles are
  // in flight while one is computed, and hold no registers (which bound how many warps hide the latency).
  constexpr int kStages = 3;
  constexpr int kCombineBytes = kWarps * GROUP * (HEAD_DIM + 2) * 4;
  __shared__ __align__(16) uint8_t
      shared[kWarps * kStages * Stage::kBytes > kCombineBytes ? kWarps * kStages * Stage::kBytes : kCombineBytes];
  uint8_t* stages = shared + warp * kStages * Stage::kBytes;
  const int64_t quantized_last = min(last_tile, max(tile, (quantized - begin) / 16));
  const int64_t count = quantized_last - tile;
#pragma unroll
  for (int k = 0; k < kStages - 1; ++k) {
    if (k < count) stage_tile(begin + 16 * (tile + k), stages + k * Stage::kBytes);
    commit_copies();
  }
  for (int64_t k = 0; k < count; ++k) {
    const int64_t ahead = k + kStages - 1;
    if (ahead < count) stage_tile(begin + 16 * (tile + ahead), stages + (ahead % kStages) * Stage::kBytes);
    commit_copies();
    wait_copies<kStages - 1>();  // this lane's copies of tile k have landed ...
    __syncwarp();                // ... and the other lanes' too
    const uint8_t* stage = stages + (k % kStages) * Stage::kBytes;
    Tile raw;
    read_tile(begin + 16 * (tile + k), stage, raw);
    quantized_tile(begin + 16 * (tile + k), raw, stage);
    __syncwarp();  // the stage is read before the copies of tile k + kStages overwrite it
  }
  wait_copies<0>();
  tile = quantized_last;
  // The bf16 recent tokens: the same two MMAs on the values as stored.
  for (; tile < last_tile; ++tile) {
    const int64_t start = begin + 16 * tile;
    if (loaded_group != -1) load_query_operands(-1, nullptr, nullptr);
    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (int n = 0; n < 2; ++n) {
      const int64_t token = start + 8 * n + i;
      uint32_t k[kKeyChannels / 2];
#pragma unroll
      for (int w = 0; w < kKeyChannels / 8; ++w) {
        const uint4 v = token < end
                            ? *reinterpret_cast<const uint4*>(recent_keys + (token - quantized) * HEAD_DIM + 8 * w)
                            : make_uint4(0, 0, 0, 0);
        k[4 * w] = v.x, k[4 * w + 1] = v.y, k[4 * w + 2] = v.z, k[4 * w + 3] = v.w;
      }
#pragma unroll
      for (int t = 0; t < kKTiles; ++t) {
        const int c = kCodesPerWord * (t / kTilesPerWord) + 2 * (t % kTilesPerWord);
        const uint32_t a_tile[4] = {a[t][0], 0u, a[t][1], 0u};
        // channels (c, c + W/2) and (c + 1, c + 1 + W/2): c is even, so c and c + W/2 sit in low halves
        mma_16816(s[n], a_tile, pair_halves<0, 0>(k[c / 2], k[(c + kHalfWord) / 2]),
                  pair_halves<1, 1>(k[c / 2], k[(c + kHalfWord) / 2]));
      }
    }
    bool attended[4];
    uint32_t v[4][kValueChannels / 2];
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const int64_t token = start + 2 * j + (t & 1) + 8 * (t >> 1);
      attended[t] = token < end && positions[token] >= 0;
#pragma unroll
      for (int w = 0; w < kValueChannels / 8; ++w) {
        const uint4 row = attended[t]
                              ? *reinterpret_cast<const uint4*>(recent_values + (token - quantized) * HEAD_DIM + 8 * w)
                              : make_uint4(0, 0, 0, 0);
        v[t][4 * w] = row.x, v[t][4 * w + 1] = row.y, v[t][4 * w + 2] = row.z, v[t][4 * w + 3] = row.w;
      }
    }
    uint32_t p0, p1;
    softmax_step(s, attended, p0, p1);
#pragma unroll
    for (int u = 0; u < kMTiles; ++u) {  // element 2u: low half of word u; 2u + 1: its high half
      const uint32_t v_tile[4] = {pair_halves<0, 0>(v[0][u], v[1][u]), pair_halves<1, 1>(v[0][u], v[1][u]),
                                  pair_halves<0, 0>(v[2][u], v[3][u]), pair_halves<1, 1>(v[2][u], v[3][u])};
      mma_16816(o[u], v_tile, p0, p1);
    }
  }

  // The warps' states into shared memory (head 2j, 2j + 1 columns of each channel pair), then one partial per head.
  running_sum += __shfl_xor_sync(0xffffffffu, running_sum, 1);
  running_sum += __shfl_xor_sync(0xffffffffu, running_sum, 2);
  __syncthreads();  // every warp is done with its stages: the same shared memory now holds the warps' states
  auto& warp_out = *reinterpret_cast<float(*)[kWarps][GROUP][HEAD_DIM]>(shared);
  auto& warp_max = *reinterpret_cast<float(*)[kWarps][GROUP]>(shared + kWarps * GROUP * HEAD_DIM * 4);
  auto& warp_sum = *reinterpret_cast<float(*)[kWarps][GROUP]>(shared + kWarps * GROUP * (HEAD_DIM + 1) * 4);
  if (j == 0 && i < GROUP) {
    warp_max[warp][i] = running_max;
    warp_sum[warp][i] = running_sum;
  }
#pragma unroll
  for (int u = 0; u < kMTiles; ++u) {
    const int channel = i * kValueChannels + 2 * u;
    if (2 * j < GROUP) {
      warp_out[warp][2 * j][channel] = o[u][0];
      warp_out[warp][2 * j][channel + 1] = o[u][2];
    }
    if (2 * j + 1 < GROUP) {
      warp_out[warp][2 * j + 1][channel] = o[u][1];
      warp_out[warp][2 * j + 1][channel + 1] = o[u][3];
    }
  }
  __syncthreads();
  combine_team_partials<HEAD_DIM, GROUP, kWarps, kThreads>(warp_max, warp_sum, warp_out, p.workspace,
                                                           shape.batch * shape.heads, p.splits, split, first_row);
}

template <int HEAD_DIM, int GROUP, int BITS>
cudaError_t launch_for(const QuantizedDecodeParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.splits), static_cast<unsigned>(p.shape.batch * p.shape.kv_heads));
  const int64_t chunk = (p.shape.slots + p.splits - 1) / p.splits;
  if (p.tensor_cores && quantized_tensor_cores_supported(HEAD_DIM, p.group)) {
    // Chunks of whole 16-token tiles, so no tile mixes codes and bf16 tokens or two key groups.
    quantized_mma_chunk_kernel<HEAD_DIM, GROUP, BITS><<<grid, kThreads, 0, stream>>>(p, (chunk + 15) / 16 * 16);
  } else {
    quantized_chunk_kernel<HEAD_DIM, GROUP, BITS><<<grid, kThreads, 0, stream>>>(p, chunk);
  }
  merge_chunk_partials<<<static_cast<unsigned>(p.shape.batch * p.shape.heads), HEAD_DIM, merge_shared_bytes(p.splits),
                         stream>>>(p.workspace, p.shape.batch * p.shape.heads, p.splits, HEAD_DIM,
                                   reinterpret_cast<__nv_bfloat16*>(p.out));
  return cudaGetLastError();
}

}  // namespace

bool quantized_tensor_cores_supported(int64_t head_dim, int64_t group) { return group >= 16 && group >= head_dim / 8; }

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
