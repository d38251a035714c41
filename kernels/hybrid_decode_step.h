#pragma once
// One decode step of the hybrid linear + sliding-window attention (runtime/hybrid_attention.h) for a whole layer and
// batch in one launch: per (sequence, head) the token leaving the window folds into the state S and normaliser z
// (one pass over S, which also reads φ(q)ᵀS), the new token takes its ring slot, the window's softmax (Lizard's sink
// logits in its denominator, or LoLCATs' weight and shared normaliser) runs over the ring, and the branches combine.
// Plain pointers; no checks here (the binding layer validates). Reference: HybridDecodeState::step in float64.
#include <cstdint>

#ifdef KVFORGE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kvforge::kernels {

// T is float, or bf16 as raw 16-bit words (uint16_t) so this header needs no CUDA types.
template <typename T>
struct HybridDecodeStep {
  // The state, updated in place: S [b, h, F, Dv] and z [b, h, F] in fp32; rings of `window` slots.
  float* state;
  float* normaliser;
  T* ring_keys;           // [b, h, W, D]
  T* ring_values;         // [b, h, W, Dv]
  T* ring_features;       // [b, h, W, F]
  float* ring_log_gates;  // [b, h, W]
  bool* ring_valid;       // [b, W]
  // This token, per (sequence, head): φ(q), φ(k) [b, h, F]; q, k [b, h, D]; v [b, h, Dv].
  const T *query_features, *key_features, *query, *key, *value;
  const float* log_gate;       // [b, h] log γ, or null (no decay)
  const float* sink_logits;    // [h, sinks] (Lizard), or null
  const float* window_logits;  // [h] (LoLCATs), or null
  const bool* valid;           // [b], or null (all real)
  T* out;                      // [b, h, Dv]
  int batch, heads, features, head_dim, value_dim, window, sinks;
  int64_t tokens;      // tokens the state has seen before this one
  bool lolcats;        // shared normaliser with window weight σ(logit); else Lizard's separate normalisers
  bool linear_all;     // the linear branch reads every key (else only keys that left the window)
  float window_scale;  // Lizard's α
  float scale;         // 1/√D
};

#ifdef KVFORGE_HAVE_CUDA
// 128 threads per (sequence, head). Needs value_dim in {32, 64, 128}.
cudaError_t launch_hybrid_decode_step_f32(const HybridDecodeStep<float>& step, cudaStream_t stream);
cudaError_t launch_hybrid_decode_step_bf16(const HybridDecodeStep<uint16_t>& step, cudaStream_t stream);
#endif

}  // namespace kvforge::kernels
