#pragma once
// A softmax model's attention linearized (Lizard, LoLCATs): each layer keeps its q/k/v/o projections and gains a
// Hedgehog feature map for queries and keys, and for Lizard a per-head scalar gate γ = σ(W_γ x + b) on the attention
// input and learnable sink logits; the hybrid attention (runtime/hybrid_attention.h) replaces softmax over the
// whole past. Attached to a Transformer like HeadMixing, without touching its weights.
// Training stage 1 (attention transfer) runs the teacher's softmax beside the student in every layer, sums the
// per-layer MSE between their outputs (before o_proj, over real tokens) and passes the teacher's output on, so every
// layer learns from the teacher's inputs.
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/hybrid_attention.h"
#include "runtime/kv_cache.h"
#include "runtime/model_config.h"

namespace kvforge {

// Stage 2's low-rank adapters on the attention projections: W x + (alpha / rank)·B A x, B starting at zero so the
// adapted model starts as stage 1 left it. `merged` holds W + (alpha / rank)·B A instead (an export option).
enum LoraTarget : int { kLoraQuery = 1, kLoraKey = 2, kLoraValue = 4, kLoraOutput = 8 };
struct LoraConfig {
  int64_t rank = 0;  // 0 = no adapters
  double alpha = 16.0;
  int targets = kLoraQuery | kLoraKey | kLoraValue;  // Lizard: q, k, v; LoLCATs adds o
  bool merged = false;
  double scale() const { return alpha / static_cast<double>(rank); }
};

struct LinearizationConfig {
  HybridAttentionConfig attention;  // kind, window, which keys the linear branch covers, α
  int64_t feature_dim = 64;         // per half of the Hedgehog map (φ has 2 × this)
  int64_t sinks = 4;                // Lizard's meta-memory logits per head (0 = none)
  bool gates = true;                // Lizard: per-head data-dependent decay; false = γ ≡ 1 (the ungated baseline)
  int64_t chunk = 64;               // chunk of the parallel form
  // Feature maps read RoPE'd queries and keys (LoLCATs) or the unrotated ones (Lizard, "RoPE removed in the gated
  // branch"); the window's softmax always sees them rotated, as the teacher did.
  bool features_after_rope = false;
  double gate_bias = 5.0;             // initial γ = σ(5) ≈ 0.993: a memory of ~150 tokens before training moves it
  double sink_init = -5.0;            // initial sink logits: barely in the denominator
  double window_logit_init = -2.197;  // LoLCATs' σ(w) = 0.1
  LoraConfig lora;
};

// "Lizard", "ungated Lizard" or "LoLCATs-style": the variant a configuration is, for banners and labels.
const char* variant_name(const LinearizationConfig& config);

// One layer's trainable parameters. Feature maps start at the rectangular identity (LoLCATs' lk_zero_init), so φ
// first reads the leading channels of q and k.
struct LinearizedLayerImpl : torch::nn::Module {
  LinearizedLayerImpl(const ModelConfig& model, const LinearizationConfig& config, const at::TensorOptions& options);
  at::Tensor query_map, key_map;      // [heads, head_dim, feature_dim]
  at::Tensor gate_weight, gate_bias;  // Lizard: [heads, hidden], [heads]
  at::Tensor sink_logits;             // Lizard with sinks: [heads, sinks]
  at::Tensor window_logits;           // LoLCATs: [heads]
  // Stage 2, per LoRA target (index: 0 q, 1 k, 2 v, 3 o): adapters A [rank, in] and B [out, rank], or the merged
  // weight [out, in]; undefined where the target is not adapted.
  at::Tensor lora_a[4], lora_b[4], merged_weight[4];
};
TORCH_MODULE(LinearizedLayer);

class LinearizedCache;

struct Linearization {
  Linearization(const ModelConfig& model, LinearizationConfig config, const at::TensorOptions& options);
  ModelConfig model;
  LinearizationConfig config;
  std::vector<LinearizedLayer> layers;
  std::vector<at::Tensor> parameters() const;
  // Named "layers.l.query_map", ... (the artifact's and the checkpoints' names).
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;
  // A copy on `options`' device and dtype, gradients off (for inference).
  Linearization on(const at::TensorOptions& options) const;
  // This linearization's parameters (as trainable copies) beside fresh stage-2 adapters: A uniform in ±1/√in from
  // `seed` (PEFT's default), B zero.
  Linearization with_lora(const LoraConfig& lora, uint64_t seed) const;
  // The adapters folded into the projections, W + (alpha / rank)·B A per target in W's dtype; base_weights holds
  // each layer's q, k, v, o weights.
  Linearization merged(const std::vector<std::array<at::Tensor, 4>>& base_weights) const;
  std::vector<at::Tensor> lora_parameters() const;
  // A projection of `layer` as adapted here: `target` one of kLoraQuery... ; base_weight/base_bias the model's.
  at::Tensor project(int64_t layer, LoraTarget target, const at::Tensor& input, const at::Tensor& base_weight,
                     const at::Tensor& base_bias) const;

  // Stage 1: see the header comment. transfer_loss sums each layer's MSE; reset it before a forward.
  bool attention_transfer = false;
  at::Tensor transfer_loss;

  // The hybrid attention of `layer` for a whole sequence (the parallel form). x: the attention's input
  // [batch, tokens, hidden]; queries/keys before and after RoPE [batch, heads or kv_heads, tokens, head_dim]
  // (K/V are repeated to the query heads here); values [batch, kv_heads, tokens, head_dim].
  // Returns [batch, heads, tokens, head_dim].
  at::Tensor attend(int64_t layer, const at::Tensor& x, const at::Tensor& queries, const at::Tensor& keys,
                    const at::Tensor& rotated_queries, const at::Tensor& rotated_keys, const at::Tensor& values) const;
  // The same over a decode state: the first call reads a whole prompt (the parallel form, then the state absorbs it),
  // later ones step token by token. positions: [batch, tokens], -1 = padding (left padding, finished sequences).
  at::Tensor decode(int64_t layer, LinearizedCache& cache, const at::Tensor& x, const at::Tensor& queries,
                    const at::Tensor& keys, const at::Tensor& rotated_queries, const at::Tensor& rotated_keys,
                    const at::Tensor& values, const at::Tensor& positions) const;
  // Stage 1's bookkeeping: adds MSE(student, teacher) over the tokens with positions >= 0 to transfer_loss.
  void add_transfer_loss(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& positions);

 private:
  // Copies into this linearization every parameter whose name `source` also has (the rest keep their values).
  void copy_shared_parameters(const Linearization& source);
  HybridInputs inputs(int64_t layer, const at::Tensor& x, const at::Tensor& queries, const at::Tensor& keys,
                      const at::Tensor& rotated_queries, const at::Tensor& rotated_keys,
                      const at::Tensor& values) const;
};

// What a linearized model keeps while it generates: per layer the hybrid attention's state (S, z and the window's
// exact keys and values), made on the layer's first step. Memory is constant in the sequence length.
class LinearizedCache : public KVCache {
 public:
  LinearizedCache(const LinearizationConfig& config, int64_t num_layers) : config_(config), states_(num_layers) {}
  // Linearized layers keep a state, not keys and values: Linearization::decode reads and writes it.
  CachedKV update(int64_t layer, const at::Tensor& keys, const at::Tensor& values,
                  const at::Tensor& positions) override;
  int64_t length(int64_t layer) const override;
  int64_t bytes() const override;
  HybridDecodeState& state(int64_t layer, int64_t batch, int64_t heads, int64_t features, int64_t head_dim,
                           int64_t value_dim, const at::TensorOptions& options);

 private:
  LinearizationConfig config_;
  std::vector<std::optional<HybridDecodeState>> states_;
};

}  // namespace kvforge
