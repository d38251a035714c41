#pragma once
// Decode attention over CSKV's bi-branch cache: one new query token per sequence against older tokens held as
// pre-RoPE low-rank latents and the newest tokens held exact.
//
// Latent tokens: key_t = B_K[h]·c_t (+ bias), rotated at the token's own position, is rebuilt tile by tile in
// registers with tensor cores (latent tile × B_K[h]ᵀ) and never written to memory; the scores of the
// KV head's query group are taken from it. Values are attended in the latent space (Σ p_t·c^V_t, the full value
// latent per query head) and lifted once per query by B_V[h] in the merge. The sequence of latent tokens is split
// into chunks that run in parallel (flash-decoding); the merge also attends the exact window and combines both
// branches by their softmax statistics. bf16 storage, fp32 accumulation.
//
// Layouts (contiguous): key latents [batch, tokens, key_rank], value latents [batch, tokens, value_rank], of which
// the first `latent_tokens` are attended; B_K, B_V [kv_heads·head_dim, rank]; biases [kv_heads·head_dim] or null;
// latent positions [batch, tokens] int64 (-1 = padding, not attended); exact keys and values
// [batch, kv_heads, exact_tokens, head_dim] after RoPE with positions [batch, exact_tokens]; inv_freq [head_dim/2]
// float32 (the model's RoPE frequencies, scaling applied).
#include <cstdint>

#ifdef KVFORGE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kvforge::kernels {

struct LowRankDecodeShape {
  int64_t batch = 0;
  int64_t heads = 0;  // query heads, a multiple of kv_heads
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t key_rank = 0;
  int64_t value_rank = 0;
  int64_t latent_stride = 0;  // tokens per sequence in the latent buffers (>= latent_tokens)
  int64_t latent_tokens = 0;  // attended latent tokens per sequence
  int64_t exact_tokens = 0;
};

// Float64 reference: keys rebuilt and rotated in float64, then softmax attention over latent + exact tokens.
// q, out: [batch, heads, head_dim]. A head with no attended token gets zeros.
void low_rank_decode_attention_reference(const double* q, const double* key_latents, const double* value_latents,
                                         const double* key_up, const double* value_up, const double* key_bias,
                                         const double* value_bias, const int64_t* latent_positions,
                                         const double* exact_keys, const double* exact_values,
                                         const int64_t* exact_positions, const float* inv_freq, double* out,
                                         const LowRankDecodeShape& shape, double scale);

#ifdef KVFORGE_HAVE_CUDA
struct LowRankDecodeParams {
  LowRankDecodeShape shape;
  const uint16_t* q = nullptr;  // bf16 [batch, heads, head_dim]
  const uint16_t* key_latents = nullptr;
  const uint16_t* value_latents = nullptr;
  const uint16_t* key_up = nullptr;
  const uint16_t* value_up = nullptr;
  const uint16_t* key_bias = nullptr;  // may be null
  const uint16_t* value_bias = nullptr;
  const int64_t* latent_positions = nullptr;
  const uint16_t* exact_keys = nullptr;
  const uint16_t* exact_values = nullptr;
  const int64_t* exact_positions = nullptr;
  const float* inv_freq = nullptr;
  uint16_t* out = nullptr;  // bf16 [batch, heads, head_dim]
  float scale = 1.0f;
  float* workspace = nullptr;  // low_rank_decode_workspace_floats(shape, splits)
  int splits = 1;
};

// head_dim 64/128, 1..8 query heads per KV head, even key and value ranks up to 256 (B_K[h] lives in shared
// memory, latents are read as bf16 pairs, a lane accumulates 8 value-latent channels per query head).
bool low_rank_decode_supported(int64_t head_dim, int64_t group, int64_t key_rank, int64_t value_rank);
int low_rank_decode_splits(const LowRankDecodeShape& shape, int multiprocessors);
int64_t low_rank_decode_workspace_floats(const LowRankDecodeShape& shape, int splits);
cudaError_t launch_low_rank_decode_attention_bf16(const LowRankDecodeParams& params, cudaStream_t stream);
#endif

}  // namespace kvforge::kernels
