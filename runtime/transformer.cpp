#include "runtime/transformer.h"

#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "kernels/bindings.h"
#include "runtime/banded_attention.h"
#include "runtime/rms_norm.h"

namespace kvforge {

namespace {

// Keys that are exactly the queries' tokens, positions 0, 1, ... in every row: a plain causal mask is exact, and CUDA
// runs it in the flash kernel with grouped KV heads, never materialising [queries × keys].
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true,
                                          /*scale=*/std::nullopt, /*enable_gqa=*/true);
}

}  // namespace

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool bias, const at::TensorOptions& options) {
  weight = register_parameter("weight", at::empty({out_features, in_features}, options));
  if (bias) this->bias = register_parameter("bias", at::empty({out_features}, options));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) { return at::linear(x, weight, bias); }

EmbeddingImpl::EmbeddingImpl(int64_t vocab_size, int64_t dim, const at::TensorOptions& options) {
  weight = register_parameter("weight", at::empty({vocab_size, dim}, options));
}

at::Tensor EmbeddingImpl::forward(const at::Tensor& ids) { return at::embedding(weight, ids); }

RMSNormImpl::RMSNormImpl(int64_t dim, double eps, const at::TensorOptions& options) : eps(eps) {
  weight = register_parameter("weight", at::empty({dim}, options));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) { return rms_normalized(x, weight, eps); }

AttentionImpl::AttentionImpl(const ModelConfig& config, int64_t layer_index, const at::TensorOptions& options)
    : layer_index(layer_index),
      num_heads(config.num_heads),
      num_kv_heads(config.num_kv_heads),
      head_dim(config.head_dim),
      sliding_window(config.sliding_window.at(layer_index)) {
  const int64_t hidden = config.hidden_size;
  q_proj = register_module("q_proj", Linear(hidden, num_heads * head_dim, config.qkv_bias, options));
  k_proj = register_module("k_proj", Linear(hidden, num_kv_heads * head_dim, config.qkv_bias, options));
  v_proj = register_module("v_proj", Linear(hidden, num_kv_heads * head_dim, config.qkv_bias, options));
  o_proj = register_module("o_proj", Linear(num_heads * head_dim, hidden, config.o_bias, options));
  if (config.qk_norm) {
    q_norm = register_module("q_norm", RMSNorm(head_dim, config.rms_norm_eps, options));
    k_norm = register_module("k_norm", RMSNorm(head_dim, config.rms_norm_eps, options));
  }
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const RopeAngles& rope, const at::Tensor& positions,
                                  KVCache* cache, bool causal_prefix) {
  const int64_t batch = x.size(0), tokens = x.size(1);
  if (cache != nullptr) cache->attention_input(layer_index, x);
  // q: [batch, heads, tokens, head_dim]; k, v: [batch, kv_heads, tokens, head_dim]
  // A linearization may adapt the projections (Lizard's stage-2 LoRA).
  auto project = [&](Linear& projection, LoraTarget target, const at::Tensor& input) {
    return linearization != nullptr
               ? linearization->project(layer_index, target, input, projection->weight, projection->bias)
               : projection->forward(input);
  };
  // Qwen3 normalises each head's projection over head_dim before RoPE (and before any cache sees the keys).
  auto per_head = [&](const at::Tensor& projected, int64_t heads, RMSNorm& norm) {
    at::Tensor split = projected.view({batch, tokens, heads, head_dim});
    return (norm ? norm->forward(split) : split).transpose(1, 2);
  };
  at::Tensor q = per_head(project(q_proj, kLoraQuery, x), num_heads, q_norm);
  at::Tensor k = per_head(project(k_proj, kLoraKey, x), num_kv_heads, k_norm);
  at::Tensor v = project(v_proj, kLoraValue, x).view({batch, tokens, num_kv_heads, head_dim}).transpose(1, 2);
  if (cache != nullptr) cache->pre_rope(layer_index, k, v);
  const at::Tensor unrotated_q = q, unrotated_k = k;
  q = apply_rope(q, rope);
  k = apply_rope(k, rope);
  auto project_out = [&](const at::Tensor& heads_out) {
    return project(o_proj, kLoraOutput, heads_out.transpose(1, 2).reshape({batch, tokens, num_heads * head_dim}));
  };
  if (linearization != nullptr && cache != nullptr) {
    auto* state = dynamic_cast<LinearizedCache*>(cache);
    if (state == nullptr) throw std::logic_error("linearized attention decodes over a LinearizedCache only");
    return project_out(linearization->decode(layer_index, *state, x, unrotated_q, unrotated_k, q, k, v, positions));
  }
  CachedKV kv = cache != nullptr ? cache->update(layer_index, k, v, positions) : CachedKV{k, v, positions};
  // Under causal_prefix, keys aligned with the queries (no cache, or one that returns exactly this step's slots, as
  // KV Prediction's predicted cache does in training) make a plain causal mask exact.
  const bool aligned = cache == nullptr || (!kv.head_parts && kv.keys.size(2) == tokens && kv.window_tokens == 0 &&
                                            !kv.low_rank && !kv.quantized);
  auto softmax_attention = [&] {
    if (causal_prefix && aligned && sliding_window == 0 && x.is_cuda()) return causal_attention(q, kv.keys, kv.values);
    return attend(q, kv, positions, causal_prefix && sliding_window == 0 && x.is_cuda());
  };
  if (linearization != nullptr) {
    at::Tensor student = linearization->attend(layer_index, x, unrotated_q, unrotated_k, q, k, v);
    if (!linearization->attention_transfer) return project_out(student);
    at::Tensor teacher;
    {
      torch::NoGradGuard no_grad;
      teacher = softmax_attention();
    }
    linearization->add_transfer_loss(student, teacher, positions);
    return project_out(teacher);  // the next layer learns from the teacher's inputs
  }
  at::Tensor out = softmax_attention();
  if (head_mixing != nullptr) {
    if (head_mixing->recording) {
      head_mixing->recorded.at(layer_index) = out.detach();
    } else {
      CachedKV streaming = kv;  // the same keys and values, seen through the sink + recent window
      streaming.sink_tokens = head_mixing->sink_tokens;
      streaming.window_tokens = head_mixing->recent_tokens;
      out = head_mixing->mix(layer_index, out, attend(q, streaming, positions));
    }
  }
  if (cache != nullptr) cache->after_attention(layer_index, q, positions);
  return project_out(out);
}

MlpImpl::MlpImpl(const ModelConfig& config, const at::TensorOptions& options) {
  gate_proj =
      register_module("gate_proj", Linear(config.hidden_size, config.intermediate_size, config.mlp_bias, options));
  up_proj = register_module("up_proj", Linear(config.hidden_size, config.intermediate_size, config.mlp_bias, options));
  down_proj =
      register_module("down_proj", Linear(config.intermediate_size, config.hidden_size, config.mlp_bias, options));
}

at::Tensor MlpImpl::forward(const at::Tensor& x) {
  auto mlp = [&](const at::Tensor& rows) {
    return down_proj->forward(at::silu(gate_proj->forward(rows)) * up_proj->forward(rows));
  };
  // Token-wise, so a long prompt batch can go through it in slices: its intermediate activations are 3.5 × the hidden
  // width per token (Llama-3.1-8B at 16 × 32k tokens: 45 GiB at once, which is what ran the full cache out of memory
  // beside 64 GiB of KV). Only without autograd, which keeps every slice's activations anyway.
  const int64_t tokens = x.numel() / x.size(-1);
  if (at::GradMode::is_enabled() || tokens <= kMlpRowsPerSlice) return mlp(x);
  const at::Tensor rows = x.reshape({tokens, x.size(-1)});
  at::Tensor out = at::empty({tokens, down_proj->weight.size(0)}, x.options());
  for (int64_t start = 0; start < tokens; start += kMlpRowsPerSlice) {
    const int64_t count = std::min(kMlpRowsPerSlice, tokens - start);
    out.narrow(0, start, count).copy_(mlp(rows.narrow(0, start, count)));
  }
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = out.size(1);
  return out.view(shape);
}

at::Tensor AttentionImpl::attend(const at::Tensor& q, const CachedKV& kv, const at::Tensor& positions,
                                 bool fused_causal) const {
  if (kv.low_rank)
    return kernels::low_rank_decode_attention(q, *kv.low_rank, 1.0 / std::sqrt(static_cast<double>(head_dim)));
  if (kv.quantized)
    return kernels::quantized_decode_attention(q, *kv.quantized, 1.0 / std::sqrt(static_cast<double>(head_dim)));
  if (kv.head_parts) {
    if (q.size(2) == 1 && kv.window_tokens == 0 && sliding_window == 0 &&
        kernels::decode_by_head_supported(*kv.head_parts, q.size(1)))
      return kernels::decode_attention_by_head(q, *kv.head_parts, 1.0 / std::sqrt(static_cast<double>(head_dim)));
    return attend_parts(q, kv, positions, fused_causal);
  }
  // Decode (one query per sequence) over a cache: every held slot precedes the query, so the kernel
  // needs only slot validity plus at most one window (the cache's streaming one or the model's).
  const bool one_window = sliding_window == 0 || kv.window_tokens == 0;
  if (q.size(2) == 1 && one_window && kernels::decode_attention_supported(q, kv.keys, kv.values, kv.positions)) {
    kernels::DecodeMaskWindow window;
    window.window = kv.window_tokens > 0 ? kv.window_tokens : sliding_window;
    window.sink = kv.window_tokens > 0 ? kv.sink_tokens : 0;
    if (window.window > 0) window.query_positions = positions.select(1, 0);
    return kernels::decode_attention(q, kv.keys, kv.values, kv.positions,
                                     1.0 / std::sqrt(static_cast<double>(head_dim)), window);
  }
  // A prompt chunk under a streaming window, one row of positions for every head (StreamingLLM's first chunk, the
  // gates' streaming branch): only the key blocks the window reaches.
  if (kv.window_tokens > 0 && q.size(2) > 1 && sliding_window == 0 && kv.positions.dim() == 2)
    return banded_attention(q, kv.keys, kv.values, positions, kv.positions, kv.sink_tokens, kv.window_tokens);
  const at::Tensor mask = attention_mask(positions, kv.positions, sliding_window, kv.sink_tokens, kv.window_tokens);
  return masked_attention(q, kv.keys, kv.values, mask);
}

at::Tensor AttentionImpl::attend_parts(const at::Tensor& q, const CachedKV& kv, const at::Tensor& positions,
                                       bool fused_causal) const {
  const kernels::DecodeHeadParts& parts = *kv.head_parts;
  int64_t kv_heads = 0;
  for (const kernels::DecodeHeadPart& part : parts) kv_heads += static_cast<int64_t>(part.heads.size());
  const int64_t group = q.size(1) / kv_heads;
  at::Tensor out = at::empty_like(q);
  for (size_t i = 0; i < parts.size(); ++i) {
    const kernels::DecodeHeadPart& part = parts[i];
    std::vector<int64_t> query_heads;
    for (int64_t head : part.heads)
      for (int64_t g = 0; g < group; ++g) query_heads.push_back(head * group + g);
    const at::Tensor index = at::tensor(query_heads, at::kLong).to(q.device());
    const at::Tensor part_q = q.index_select(1, index);
    CachedKV part_kv{part.keys, part.values, part.positions};
    if (static_cast<int64_t>(i) == kv.streaming_part) {
      part_kv.sink_tokens = kv.sink_tokens;
      part_kv.window_tokens = kv.window_tokens;
    }
    // A prompt chunk over streaming heads computes only the key blocks their window reaches; over full heads that hold
    // exactly the chunk, under fused_causal, the flash kernel (no [queries × keys] mask).
    const bool prompt_chunk = q.size(2) > 1 && sliding_window == 0;
    at::Tensor part_out;
    if (part_kv.window_tokens > 0 && prompt_chunk)
      part_out =
          banded_attention(part_q, part.keys, part.values, positions, part.positions, kv.sink_tokens, kv.window_tokens);
    else if (fused_causal && prompt_chunk && part.keys.size(2) == q.size(2))
      part_out = causal_attention(part_q, part.keys, part.values);
    else
      part_out = attend(part_q, part_kv, positions);
    out.index_copy_(1, index, part_out);
  }
  return out;
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& config, int64_t layer_index, const at::TensorOptions& options) {
  self_attn = register_module("self_attn", Attention(config, layer_index, options));
  mlp = register_module("mlp", Mlp(config, options));
  input_layernorm = register_module("input_layernorm", RMSNorm(config.hidden_size, config.rms_norm_eps, options));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(config.hidden_size, config.rms_norm_eps, options));
}

at::Tensor DecoderLayerImpl::forward(const at::Tensor& x, const RopeAngles& rope, const at::Tensor& positions,
                                     KVCache* cache, bool causal_prefix) {
  at::Tensor h = x + self_attn->forward(input_layernorm->forward(x), rope, positions, cache, causal_prefix);
  return h + mlp->forward(post_attention_layernorm->forward(h));
}

DecoderStackImpl::DecoderStackImpl(const ModelConfig& config, const at::TensorOptions& options) {
  embed_tokens = register_module("embed_tokens", Embedding(config.vocab_size, config.hidden_size, options));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_layers; ++i) layers->push_back(DecoderLayer(config, i, options));
  norm = register_module("norm", RMSNorm(config.hidden_size, config.rms_norm_eps, options));
}

TransformerImpl::TransformerImpl(const ModelConfig& config, const at::TensorOptions& options) : config(config) {
  model = register_module("model", DecoderStack(config, options));
  if (!config.tie_word_embeddings)
    lm_head = register_module("lm_head", Linear(config.hidden_size, config.vocab_size, /*bias=*/false, options));
  inv_freq = register_buffer("inv_freq", rope_inverse_frequencies(config.rope, config.head_dim).to(options.device()));
}

const at::Tensor& TransformerImpl::output_weight() const {
  return lm_head ? lm_head->weight : model->embed_tokens->weight;
}

at::Tensor TransformerImpl::hidden_states(const at::Tensor& input_ids, const at::Tensor& positions, KVCache* cache,
                                          bool causal_prefix) {
  at::Tensor h = model->embed_tokens->forward(input_ids);
  const RopeAngles rope = rope_angles(inv_freq, positions, h.scalar_type());
  for (const auto& layer : *model->layers)
    h = layer->as<DecoderLayer>()->forward(h, rope, positions, cache, causal_prefix);
  return model->norm->forward(h);
}

at::Tensor TransformerImpl::forward(const at::Tensor& input_ids, const at::Tensor& positions, KVCache* cache,
                                    bool last_only, bool causal_prefix) {
  at::Tensor h = hidden_states(input_ids, positions, cache, causal_prefix);
  if (last_only) h = h.narrow(1, h.size(1) - 1, 1);
  return at::linear(h, output_weight());
}

void TransformerImpl::set_linearization(Linearization* linearization) {
  for (const auto& layer : *model->layers) layer->as<DecoderLayer>()->self_attn->linearization = linearization;
}

void TransformerImpl::set_head_mixing(HeadMixing* mixing) {
  for (const auto& layer : *model->layers) layer->as<DecoderLayer>()->self_attn->head_mixing = mixing;
  if (mixing != nullptr && mixing->recording) mixing->recorded.assign(config.num_layers, at::Tensor());
}

at::Tensor attention_mask(const at::Tensor& query_positions, const at::Tensor& key_positions, int64_t sliding_window,
                          int64_t sink_tokens, int64_t window_tokens) {
  // query: [batch, 1, queries, 1]; key: [batch, 1 or kv_heads, 1, keys]
  at::Tensor query = query_positions.unsqueeze(1).unsqueeze(3);
  at::Tensor key = (key_positions.dim() == 2 ? key_positions.unsqueeze(1) : key_positions).unsqueeze(2);
  at::Tensor visible = (key >= 0) & (key <= query);
  if (sliding_window > 0) visible = visible & (query - key < sliding_window);
  if (window_tokens > 0) visible = visible & ((query - key < window_tokens) | (key < sink_tokens));
  return visible | visible.logical_not().all(-1, /*keepdim=*/true);
}

at::Tensor masked_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  if (q.is_cuda() && q.size(2) > 1 && mask.size(1) == 1) {
    // Prefill on CUDA: a fused kernel that takes the mask and never materialises [queries, keys] scores (the grouped
    // path holds them in fp32: 24 GB for 16 prompts of 8k tokens). K/V are repeated to the query heads because the
    // memory-efficient kernel, the one that accepts a mask, has no grouped-query form.
    const int64_t group = q.size(1) / k.size(1);
    at::Tensor keys = group > 1 ? k.repeat_interleave(group, 1) : k;
    at::Tensor values = group > 1 ? v.repeat_interleave(group, 1) : v;
    return at::scaled_dot_product_attention(q, keys, values, mask, /*dropout_p=*/0.0, /*is_causal=*/false);
  }
  return grouped_attention(q, k, v, mask);
}

at::Tensor grouped_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  const int64_t batch = q.size(0), heads = q.size(1), queries = q.size(2), head_dim = q.size(3);
  const int64_t kv_heads = k.size(1), group = heads / kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  // Query heads of one KV head side by side: [batch, kv_heads, group, queries, head_dim]; the
  // matmul broadcasts K/V over the group instead of copying them.
  at::Tensor grouped_q = q.reshape({batch, kv_heads, group, queries, head_dim});
  at::Tensor scores = at::matmul(grouped_q, k.unsqueeze(2).transpose(-1, -2)) * scale;
  scores = scores.masked_fill(mask.unsqueeze(2).logical_not(), -std::numeric_limits<double>::infinity());
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return at::matmul(probs, v.unsqueeze(2)).reshape({batch, heads, queries, head_dim});
}

std::vector<std::array<at::Tensor, 4>> attention_weights(const Transformer& model) {
  std::vector<std::array<at::Tensor, 4>> weights;
  for (const auto& layer : *model->model->layers) {
    const Attention& attention = layer->as<DecoderLayer>()->self_attn;
    weights.push_back(
        {attention->q_proj->weight, attention->k_proj->weight, attention->v_proj->weight, attention->o_proj->weight});
  }
  return weights;
}

}  // namespace kvforge
