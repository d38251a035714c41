#pragma once
// Decode attention: one new query token per sequence against a KV cache, flash-decoding style. The
// sequence is split into chunks that run in parallel (so batch 1 still fills the GPU); the query heads
// of a KV head share every K/V read (GQA, never repeating K/V); partial results are merged by their
// softmax statistics in a second pass. bf16 storage, fp32 accumulation. Plain pointers; the binding
// layer validates.
//
// Cache layout: element (sequence b, KV head h, slot s, channel d) of K or V lives at
//   b * batch_stride + h * head_stride + s * head_dim + d
// (the runtime's [batch, kv_heads, capacity, head_dim] buffers). A slot is attended iff its position
// positions[b * positions_stride + h * positions_head_stride + s] is >= 0 (a head stride of 0 shares
// one row of positions among the heads; layouts that keep different tokens per head set it) and, when
// a window is given, it lies within `window` of the query's position or below `sink` (StreamingLLM,
// sliding-window layers). Slots >= `slots` are never read.
#include <cstdint>

#ifdef KVFORGE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kvforge::kernels {

struct DecodeAttentionShape {
  int64_t batch = 0;
  int64_t heads = 0;  // query heads, a multiple of kv_heads
  int64_t kv_heads = 0;
  int64_t head_dim = 0;  // 64 or 128 on the GPU
  int64_t slots = 0;     // filled cache slots per sequence
};

struct DecodeWindow {
  int64_t sink = 0;
  int64_t window = 0;  // 0: every slot with a position is attended
};

// Float64 reference. q, out: [batch, heads, head_dim]; k, v: [batch, kv_heads, slots, head_dim] contiguous;
// positions: [batch, kv_heads, slots]; query_positions: [batch]. A head with no attended slot gets zeros.
void decode_attention_reference(const double* q, const double* k, const double* v, const int64_t* positions,
                                const int64_t* query_positions, double* out, const DecodeAttentionShape& shape,
                                const DecodeWindow& window, double scale);

#ifdef KVFORGE_HAVE_CUDA
struct DecodeAttentionParams {
  DecodeAttentionShape shape;
  const uint16_t* q = nullptr;  // bf16 [batch, heads, head_dim] contiguous
  const uint16_t* k = nullptr;  // bf16, strides below
  const uint16_t* v = nullptr;
  int64_t batch_stride = 0;  // elements between sequences in k and v
  int64_t head_stride = 0;   // elements between KV heads in k and v
  const int64_t* positions = nullptr;
  int64_t positions_stride = 0;              // between sequences
  int64_t positions_head_stride = 0;         // between KV heads; 0 = shared
  const int64_t* query_positions = nullptr;  // [batch]; read only when window.window > 0
  DecodeWindow window;
  uint16_t* out = nullptr;  // bf16 [batch, heads, head_dim]
  float scale = 1.0f;
  // Workspace of decode_attention_workspace_floats(shape, splits) floats; splits from decode_attention_splits.
  float* workspace = nullptr;
  int splits = 1;
};

// Chunks per sequence: whole waves of about four blocks per multiprocessor, enough for ~1024-key chunks.
int decode_attention_splits(const DecodeAttentionShape& shape, int multiprocessors);
int64_t decode_attention_workspace_floats(const DecodeAttentionShape& shape, int splits);
bool decode_attention_supported(int64_t head_dim, int64_t group);  // head_dim 64/128, group 1..8
cudaError_t launch_decode_attention_bf16(const DecodeAttentionParams& params, cudaStream_t stream);

// Where one KV head's slots live when the heads of a layer sit in different buffers (a mixed cache's full heads in
// its growing buffer, its streaming heads in a sink + window ring): slot s of sequence b at
//   k + b * batch_stride + s * head_dim,  position positions[b * positions_stride + s],
// for s < min(slots, shape.slots). A short head's chunks past its slots end at once, so the launch costs what the
// heads hold, not kv_heads × the longest.
struct DecodeHeadSource {
  const uint16_t* k = nullptr;
  const uint16_t* v = nullptr;
  const int64_t* positions = nullptr;
  int64_t batch_stride = 0;
  int64_t positions_stride = 0;
  int64_t slots = 0;
};

// Passed to the kernel by value (no table upload per step): 64 heads × 48 bytes fit the parameter space.
constexpr int kMaxDecodeTableHeads = 64;
struct DecodeHeadTable {
  DecodeHeadSource heads[kMaxDecodeTableHeads];
};

// As launch_decode_attention_bf16, with each KV head read from table.heads[h] (params' k, v, strides and positions
// unused). shape.slots: the most slots any head holds.
cudaError_t launch_decode_attention_by_head_bf16(const DecodeAttentionParams& params, const DecodeHeadTable& table,
                                                 cudaStream_t stream);
#endif

}  // namespace kvforge::kernels
