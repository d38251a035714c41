#pragma once
// CSKV's training objective: per layer, the squared error between the model's keys (after RoPE) and the keys
// rebuilt from the latent, plus the same for values, summed over layers. The model keeps its original K and V
// inside attention, so every layer sees the teacher's inputs and trains independently; only the factors learn.
// With quantization-aware training the latents pass through the cache's own quantizers (the exact codes the
// cache would store, dequantized) with a straight-through gradient.
#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <vector>

#include "runtime/low_rank_kv_cache.h"
#include "runtime/transformer.h"
#include "trainers/task_batches.h"
#include "trainers/training_loop.h"

namespace kvforge::cskv {

struct LatentQuantization {
  int64_t bits = 16;     // 16 = none
  int64_t group = 32;    // key tokens sharing a per-channel scale
  int64_t kv_heads = 1;  // value latents share a scale over one KV head's share of the rank
};

// latents [batch, tokens, rank] -> the same values the cache would dequantize (keys per channel over whole
// groups of tokens from the first, a trailing partial group left exact as the cache leaves it; values per token
// in runs of rank / kv_heads), with gradient 1 (straight-through). bits 16 returns the input.
at::Tensor fake_quantize_key_latents(const at::Tensor& latents, const LatentQuantization& quantization);
at::Tensor fake_quantize_value_latents(const at::Tensor& latents, const LatentQuantization& quantization);

struct LayerError {
  at::Tensor key_error, value_error;    // scalar sums of squared errors over valid tokens (float32)
  at::Tensor key_energy, value_energy;  // scalar sums of squares of the true keys (after RoPE) and values
};

// One layer. factors in float32 on the inputs' device; inputs: [batch, tokens, hidden]; positions [batch, tokens]
// (-1 = padding, excluded). query_moment, when defined ([kv_heads, head_dim, head_dim]), measures key errors e
// as eᵀ·M·e instead of ‖e‖²: with M = E[q qᵀ] over the KV head's queries that is the mean squared error of the
// attention scores q·k, which is what attention sees of a key. Factors with a key_norm compare the keys after that
// norm (eps norm_eps), as the model computes them.
LayerError layer_error(const LowRankLayer& factors, const at::Tensor& key_weight, const at::Tensor& value_weight,
                       const at::Tensor& inputs, const at::Tensor& positions, const at::Tensor& inv_freq,
                       int64_t kv_heads, const LatentQuantization& quantization,
                       const at::Tensor& query_moment = at::Tensor(), double norm_eps = 1e-6);

// E[q qᵀ] per KV head over its query group's heads and the valid tokens, after the per-head query norm when given
// (Qwen3's q_norm, eps norm_eps) and RoPE, scaled to trace head_dim (so the score loss has the MSE's scale):
// [kv_heads, head_dim, head_dim], no gradient.
at::Tensor query_moment(const at::Tensor& query_weight, const at::Tensor& inputs, const at::Tensor& positions,
                        const at::Tensor& inv_freq, int64_t heads, int64_t kv_heads,
                        const at::Tensor& query_norm = at::Tensor(), double norm_eps = 1e-6);

struct ReconstructionConfig {
  BatchSource batches;
  uint64_t seed = 0;
  LatentQuantization quantization;
  bool score_loss = false;  // key errors weighted by the batch's query moment (layer_error) instead of plain MSE
};

class ReconstructionObjective : public TrainingObjective {
 public:
  // factors: float32 on the model's device, each requiring grad; the model is frozen.
  ReconstructionObjective(Transformer model, std::vector<LowRankLayer>& factors, ReconstructionConfig config);

  std::vector<at::Tensor> trainable_parameters() override;
  std::vector<std::pair<std::string, at::Tensor>> checkpoint_tensors() override;
  MicroBatchLoss micro_batch_loss(int64_t step, int64_t micro_batch) override;

  // Relative squared errors per layer, [layers, 3]: keys after RoPE, values, and the attention scores the keys
  // give (layer_error with the batch's query moment), over `batches` held-out batches (a seed apart from
  // training's).
  at::Tensor relative_errors(int64_t batches);

 private:
  Transformer model_;
  std::vector<LowRankLayer>& factors_;
  ReconstructionConfig config_;
};

}  // namespace kvforge::cskv
