#pragma once
// The Llama-family decoder (Llama, Qwen2, Qwen3, Mistral) as a torch::nn::Module. Parameter names are the
// Hugging Face names ("model.layers.3.self_attn.q_proj.weight"), so loading is a checked 1:1 copy.
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <vector>

#include "runtime/head_mixing.h"
#include "runtime/kv_cache.h"
#include "runtime/linearized_attention.h"
#include "runtime/model_config.h"
#include "runtime/rope.h"

namespace kvforge {

// y = x Wᵀ + b, with parameters created uninitialised on the target device and dtype (the
// checkpoint fills them; torch::nn::Linear would first initialise fp32 copies on the CPU).
struct LinearImpl : torch::nn::Module {
  LinearImpl(int64_t in_features, int64_t out_features, bool bias, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;  // [out_features, in_features]
  at::Tensor bias;    // [out_features] or undefined
};
TORCH_MODULE(Linear);

struct EmbeddingImpl : torch::nn::Module {
  EmbeddingImpl(int64_t vocab_size, int64_t dim, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& ids);  // ids: [batch, tokens] -> [batch, tokens, dim]
  at::Tensor weight;                          // [vocab_size, dim]
};
TORCH_MODULE(Embedding);

// RMSNorm as the reference computes it: normalise in fp32, cast back, then scale by the weight.
struct RMSNormImpl : torch::nn::Module {
  RMSNormImpl(int64_t dim, double eps, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;  // [dim]
  double eps;
};
TORCH_MODULE(RMSNorm);

struct AttentionImpl : torch::nn::Module {
  AttentionImpl(const ModelConfig& config, int64_t layer_index, const at::TensorOptions& options);
  // x: [batch, tokens, hidden]; positions: [batch, tokens] (-1 = padding). Without a cache the
  // tokens attend to each other only. `causal_prefix`: see TransformerImpl::forward.
  at::Tensor forward(const at::Tensor& x, const RopeAngles& rope, const at::Tensor& positions, KVCache* cache,
                     bool causal_prefix = false);

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  // Qwen3's per-head RMSNorm of the projected queries and keys (weights [head_dim]); null for models without it.
  RMSNorm q_norm{nullptr}, k_norm{nullptr};
  int64_t layer_index, num_heads, num_kv_heads, head_dim, sliding_window;
  HeadMixing* head_mixing = nullptr;       // not owned; see TransformerImpl::set_head_mixing
  Linearization* linearization = nullptr;  // not owned; see TransformerImpl::set_linearization

 private:
  // Attention of q over what a step sees: the decode kernel where it applies, else the masked path. `fused_causal`
  // (CUDA, a causal_prefix forward): parts holding exactly this step's tokens may attend under a plain causal mask.
  at::Tensor attend(const at::Tensor& q, const CachedKV& kv, const at::Tensor& positions,
                    bool fused_causal = false) const;
  // The same over a cache whose KV heads sit in separate parts (CachedKV::head_parts), part by part.
  at::Tensor attend_parts(const at::Tensor& q, const CachedKV& kv, const at::Tensor& positions,
                          bool fused_causal = false) const;
};
TORCH_MODULE(Attention);

// Tokens per slice of an inference MLP over a long prompt (see MlpImpl::forward): 16k tokens of Llama-3.1-8B's
// 14336-wide intermediate are 0.9 GiB of bf16 activations, and a matmul of 16k rows already runs at full speed.
constexpr int64_t kMlpRowsPerSlice = 16384;

struct MlpImpl : torch::nn::Module {
  MlpImpl(const ModelConfig& config, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x);  // down(silu(gate(x)) * up(x))
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Mlp);

struct DecoderLayerImpl : torch::nn::Module {
  DecoderLayerImpl(const ModelConfig& config, int64_t layer_index, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& x, const RopeAngles& rope, const at::Tensor& positions, KVCache* cache,
                     bool causal_prefix = false);
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderLayer);

struct DecoderStackImpl : torch::nn::Module {
  DecoderStackImpl(const ModelConfig& config, const at::TensorOptions& options);
  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(DecoderStack);

struct TransformerImpl : torch::nn::Module {
  TransformerImpl(const ModelConfig& config, const at::TensorOptions& options);

  // input_ids, positions: [batch, tokens] int64 (positions -1 for left padding).
  // Returns logits [batch, tokens, vocab], or [batch, 1, vocab] for the last token when last_only.
  // `causal_prefix` promises that every row's positions are 0, 1, ... up to right padding whose outputs are
  // ignored (training batches), and that a cache, if any, returns exactly this step's slots: a plain causal mask is
  // then exact, which lets CUDA run fused (flash) attention without materialising scores.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& positions, KVCache* cache = nullptr,
                     bool last_only = false, bool causal_prefix = false);

  // The final-norm hidden states [batch, tokens, hidden] (what forward projects to logits).
  at::Tensor hidden_states(const at::Tensor& input_ids, const at::Tensor& positions, KVCache* cache = nullptr,
                           bool causal_prefix = false);
  const at::Tensor& output_weight() const;  // lm_head, or the embedding when tied
  // Mixed-head attention in every layer while `mixing` is set (nullptr detaches it); not owned.
  void set_head_mixing(HeadMixing* mixing);
  // Linearized (Lizard / LoLCATs) attention in every layer while set, over whole sequences without a cache
  // (nullptr detaches it); not owned.
  void set_linearization(Linearization* linearization);

  ModelConfig config;
  DecoderStack model{nullptr};
  Linear lm_head{nullptr};  // null when tie_word_embeddings
  at::Tensor inv_freq;      // buffer [head_dim / 2] float32
};
TORCH_MODULE(Transformer);

// Each layer's q, k, v and o projection weights (what a linearization's adapters merge into).
std::vector<std::array<at::Tensor, 4>> attention_weights(const Transformer& model);

// Boolean attention mask [batch, 1 or kv_heads, queries, keys] from query positions [batch, queries] and
// key positions [batch, keys] (or [batch, kv_heads, keys]): a key is visible iff it holds a token at or
// before the query's position, within `sliding_window` of it when > 0, and, when window_tokens > 0,
// within window_tokens of it or below sink_tokens. Rows with no visible key (padding queries) see every key, so their
// throwaway outputs stay finite.
at::Tensor attention_mask(const at::Tensor& query_positions, const at::Tensor& key_positions, int64_t sliding_window,
                          int64_t sink_tokens = 0, int64_t window_tokens = 0);

// Softmax attention with grouped KV heads, never repeating K/V across a query group.
// q: [batch, heads, queries, head_dim]; k, v: [batch, kv_heads, keys, head_dim]; mask as above.
// Query heads h*group .. h*group+group-1 share KV head h.
at::Tensor grouped_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask);

// Attention under a mask (as attention_mask builds it) by the fastest exact path: on CUDA with several queries and one
// mask for every head, the fused SDPA kernel that never materialises the scores; else grouped_attention.
at::Tensor masked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask);

}  // namespace kvforge
