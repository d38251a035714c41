#pragma once
// Linear attention beside an exact sliding softmax window, the attention Lizard and LoLCATs linearize a softmax model
// into. Query t sees the newest `window` keys (t - window, t] exactly, through softmax of q·k/√d; the keys before
// them are summarised by feature-map linear attention, φ(q)ᵀ Σ_j γ-decay · φ(k_j) v_jᵀ, which decoding keeps as a
// constant-size state (S = Σ φ(k) vᵀ and z = Σ φ(k)) beside the window's exact keys and values.
//   Lizard:  Y = Y_linear + α·Y_window, normalised separately; Y_linear decays with data-dependent per-head scalar
//            gates γ_t (S_t = γ_t S_{t-1} + φ(k_t) v_tᵀ); the window's denominator also holds m learnable sink logits,
//            exp(t_i), which carry no value (the paper's meta-memory, v4).
//   LoLCATs: one shared normaliser, no gate: Y = (Σ_window w·exp(s - M) v + Σ_linear φ(q)·φ(k) v) /
//            (Σ_window w·exp(s - M) + Σ_linear φ(q)·φ(k)), w = σ(window logit), M the row maximum over the window's
//            scores (unscaled linear terms against max-scaled softmax terms, exactly as the reference mixes them).
// Choices the papers leave open (recorded here, options where they matter): the linear branch covers only keys that
// have left the window by default (`linear_keys`), so nothing is counted twice and a window as long as the sequence
// is exact softmax attention; the window is strict in training as in decoding (LoLCATs trains with a "terraced" one).
// Three forms that agree: the quadratic reference, the chunked parallel form (training), the recurrent step (decode).
#include <ATen/ATen.h>

#include <cstdint>

namespace kvforge {

enum class HybridKind { kLizard, kLolcats };
enum class LinearKeys {
  kOutsideWindow,  // keys j <= t - window (the decode state holds exactly the tokens that left the window)
  kAll,            // every key j <= t, the window's too (Lizard's formula read literally)
};

struct HybridAttentionConfig {
  HybridKind kind = HybridKind::kLizard;
  int64_t window = 64;  // newest keys seen exactly, the query's own included (>= 1)
  LinearKeys linear_keys = LinearKeys::kOutsideWindow;
  double window_scale = 1.0;  // Lizard's α (the paper never defines it: fixed at 1 by default)
};

// Hedgehog feature map per head: [softmax(x·W), softmax(-x·W)] over the features, clamped to >= 1e-12 (LoLCATs').
// x: [batch, heads, tokens, head_dim]; weight: [heads, head_dim, features] -> [batch, heads, tokens, 2·features].
at::Tensor hedgehog_features(const at::Tensor& x, const at::Tensor& weight);

// Every tensor per query head (grouped K/V already repeated to them).
struct HybridInputs {
  at::Tensor query_features;  // [batch, heads, tokens, features] φ(q)
  at::Tensor key_features;    // [batch, heads, tokens, features] φ(k)
  at::Tensor queries;         // [batch, heads, tokens, head_dim] as the window's softmax scores them
  at::Tensor keys;            // [batch, heads, tokens, head_dim]
  at::Tensor values;          // [batch, heads, tokens, value_dim]
  at::Tensor log_gates;       // Lizard: [batch, heads, tokens] log γ <= 0; undefined = no decay (γ ≡ 1)
  at::Tensor sink_logits;     // Lizard: [heads, sinks]; undefined = none
  at::Tensor window_logits;   // LoLCATs: [heads], the window weight w = σ(logit)
  at::Tensor key_valid;       // [batch, tokens] bool: false for padding, which neither branch sees; undefined = all
};

// Causal gated linear attention with one scalar gate per head and token, inclusive (query s reads keys j <= s):
// out_s = Σ_j exp(c_s - c_j) (q_s·k_j) v_j, c the cumulative log gate, in chunks of `chunk` tokens: within one, decays
// exp(c_i - c_j) <= 1 from chunk-local cumulative sums; across them, the state each chunk starts from, all chunks'
// at once by one matmul over chunks. What fla calls simple GLA (chunk_simple_gla with scale 1). q, k: [batch, heads, tokens, features]; v: [batch, heads, tokens, dv];
// log_gates: [batch, heads, tokens] (<= 0). Returns [batch, heads, tokens, dv].
at::Tensor gated_linear_attention(const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& values,
                                  const at::Tensor& log_gates, int64_t chunk);

// The quadratic reference: every score and decay written out, O(tokens²). Output [batch, heads, tokens, value_dim].
at::Tensor hybrid_attention_quadratic(const HybridInputs& inputs, const HybridAttentionConfig& config);

// The parallel form for training: the window exactly (banded), the linear branch as chunked gated linear attention
// with the cumulative gate kept in log space within each chunk (every decay factor exp(c_i - c_j) <= 1).
at::Tensor hybrid_attention_chunked(const HybridInputs& inputs, const HybridAttentionConfig& config,
                                    int64_t chunk = 64);

// The recurrent form for decoding: S and z per head (fp32 or float64, whatever the activations' dtype) plus the
// window's exact keys, values, key features and gates in fixed-size rings. Memory does not grow with the sequence.
class HybridDecodeState {
 public:
  HybridDecodeState(const HybridAttentionConfig& config, int64_t batch, int64_t heads, int64_t features,
                    int64_t head_dim, int64_t value_dim, const at::TensorOptions& options);
  // One token per sequence: every input [batch, heads, 1, ·] (log_gate [batch, heads, 1] or undefined);
  // `sink_logits` / `window_logits` as in HybridInputs; `valid` [batch] bool (undefined = all): a padding token
  // joins neither the window nor the state. Returns [batch, heads, 1, value_dim].
  at::Tensor step(const at::Tensor& query_features, const at::Tensor& key_features, const at::Tensor& query,
                  const at::Tensor& key, const at::Tensor& value, const at::Tensor& log_gate,
                  const at::Tensor& sink_logits, const at::Tensor& window_logits, const at::Tensor& valid = {});
  // Takes in a whole prompt at once (the state must be empty): the state the steps would have left, in closed form.
  void absorb(const HybridInputs& inputs);
  int64_t tokens() const { return tokens_; }
  int64_t bytes() const;  // what the state holds: constant in the sequence length
  // Steps on CUDA run the fused kernel (kernels/hybrid_decode_step.h) where it applies; false forces the tensor ops
  // (benchmarks compare the two). last_step_fused() says which ran.
  bool use_kernel = true;
  bool last_step_fused() const { return last_step_fused_; }

 private:
  HybridAttentionConfig config_;
  at::Tensor state_, normaliser_;                        // S [b, h, f, dv], z [b, h, f]
  at::Tensor keys_, values_, key_features_, log_gates_;  // rings of `window` slots
  at::Tensor valid_;                                     // [b, window] bool: the slot holds a real token
  int64_t tokens_ = 0;
  bool last_step_fused_ = false;
};

// The recurrent form run over a whole sequence token by token (for tests and for reading a prompt into the state).
at::Tensor hybrid_attention_recurrent(const HybridInputs& inputs, const HybridAttentionConfig& config);

}  // namespace kvforge
