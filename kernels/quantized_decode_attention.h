#pragma once
// Decode attention over a KIVI cache (runtime/quantized_kv_cache.h) without materialising it: keys quantized per
// channel (a scale and a minimum per channel of each group of `group` tokens), values per token (per run of `group`
// channels), 2 or 4 bits packed lowest-code-first, dequantized in registers as each row is read; the newest tokens
// sit beside the codes in bf16. Flash-decoding like decode_attention: chunks of the sequence in parallel, a query
// group sharing each row, partials merged by their softmax statistics. Two kernels: one on tensor cores (scores and
// values as m16n8k16 MMAs over codes turned into bf16 operands in registers), and one on CUDA cores for the groups
// the first cannot tile. Plain pointers; the binding layer validates.
#include <cstdint>

#include "kernels/decode_attention.h"

namespace kvforge::kernels {

#ifdef KVFORGE_HAVE_CUDA
struct QuantizedDecodeParams {
  DecodeAttentionShape shape;   // slots = quantized + recent
  const uint16_t* q = nullptr;  // bf16 [batch, heads, head_dim]
  int bits = 4;                 // 2 or 4
  int group = 32;               // tokens per key scale, channels per value scale; a power of two >= 8 dividing head_dim
  int64_t quantized = 0;        // tokens held as codes, a multiple of group
  const uint8_t* key_codes = nullptr;       // [batch, kv_heads, quantized, head_dim * bits / 8]
  const uint16_t* key_scale = nullptr;      // fp16 [batch, kv_heads, quantized / group, head_dim]
  const uint16_t* key_minimum = nullptr;    // same
  const uint8_t* value_codes = nullptr;     // [batch, kv_heads, quantized, head_dim * bits / 8]
  const uint16_t* value_scale = nullptr;    // fp16 [batch, kv_heads, quantized, head_dim / group]
  const uint16_t* value_minimum = nullptr;  // same
  const uint16_t* recent_keys = nullptr;    // bf16 [batch, kv_heads, slots - quantized, head_dim]
  const uint16_t* recent_values = nullptr;
  const int64_t* positions = nullptr;  // [batch, slots], shared by the heads; < 0 = not attended
  uint16_t* out = nullptr;             // bf16 [batch, heads, head_dim]
  float scale = 1.0f;
  float* workspace = nullptr;  // decode_attention_workspace_floats(shape, splits) floats
  int splits = 1;              // decode_attention_splits(shape, multiprocessors)
  // The tensor-core kernel where quantized_tensor_cores_supported (false: the CUDA-core one, which benchmarks compare).
  bool tensor_cores = true;
};

// The tensor-core kernel needs 16-token tiles inside one key group and a lane's D/8 value channels inside one value
// group: group >= 16 and group >= head_dim / 8.
bool quantized_tensor_cores_supported(int64_t head_dim, int64_t group);

cudaError_t launch_quantized_decode_attention_bf16(const QuantizedDecodeParams& params, cudaStream_t stream);
#endif

}  // namespace kvforge::kernels
