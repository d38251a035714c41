#include "trainers/cskv/reconstruction.h"

#include <torch/torch.h>

#include "runtime/quantized_kv_cache.h"
#include "runtime/rms_norm.h"
#include "runtime/rope.h"
#include "trainers/cskv/layer_inputs.h"

namespace kvforge::cskv {
namespace {

// x + (q(x) − x) without a gradient through q: the straight-through estimator.
at::Tensor straight_through(const at::Tensor& x, const at::Tensor& quantized) { return x + (quantized - x).detach(); }

// [batch, tokens, kv_heads·head_dim] -> [batch, kv_heads, tokens, head_dim]
at::Tensor heads_first(const at::Tensor& x, int64_t kv_heads) {
  return x.view({x.size(0), x.size(1), kv_heads, -1}).transpose(1, 2);
}

// The model's per-head query norm (Qwen3's q_norm) or undefined.
at::Tensor query_norm(const Attention& attention) {
  return attention->q_norm ? attention->q_norm->weight : at::Tensor();
}

}  // namespace

at::Tensor fake_quantize_key_latents(const at::Tensor& latents, const LatentQuantization& quantization) {
  if (quantization.bits >= 16) return latents;
  const int64_t group = quantization.group, whole = latents.size(1) / group * group;
  if (whole == 0) return latents;
  at::Tensor grouped = latents.detach().narrow(1, 0, whole).reshape({latents.size(0), whole / group, group, -1});
  const at::Tensor dequantized = dequantize_keys_per_channel(quantize_keys_per_channel(grouped, quantization.bits),
                                                             quantization.bits, latents.scalar_type())
                                     .reshape({latents.size(0), whole, -1});
  at::Tensor head = straight_through(latents.narrow(1, 0, whole), dequantized);
  return whole == latents.size(1) ? head : at::cat({head, latents.narrow(1, whole, latents.size(1) - whole)}, 1);
}

at::Tensor fake_quantize_value_latents(const at::Tensor& latents, const LatentQuantization& quantization) {
  if (quantization.bits >= 16) return latents;
  const int64_t per_head = latents.size(2) / quantization.kv_heads;
  const at::Tensor dequantized =
      dequantize_values_per_token(quantize_values_per_token(latents.detach().unsqueeze(1), quantization.bits, per_head),
                                  quantization.bits, per_head, latents.scalar_type())
          .squeeze(1);
  return straight_through(latents, dequantized);
}

at::Tensor query_moment(const at::Tensor& query_weight, const at::Tensor& inputs, const at::Tensor& positions,
                        const at::Tensor& inv_freq, int64_t heads, int64_t kv_heads, const at::Tensor& query_norm,
                        double norm_eps) {
  torch::NoGradGuard no_grad;
  const at::Tensor x = inputs.to(at::kFloat);
  at::Tensor queries = heads_first(at::matmul(x, query_weight.detach().to(at::kFloat).t()), heads);
  if (query_norm.defined()) queries = rms_normalized(queries, query_norm.detach().to(at::kFloat), norm_eps);
  queries = apply_rope(queries, rope_angles(inv_freq, positions, at::kFloat));  // [batch, heads, tokens, head_dim]
  const at::Tensor valid = (positions >= 0).to(at::kFloat).view({positions.size(0), 1, positions.size(1), 1});
  const int64_t dim = queries.size(3), group = heads / kv_heads;
  // [kv_heads, group·batch·tokens, head_dim] with padding rows zeroed
  const at::Tensor rows = (queries * valid)
                              .reshape({queries.size(0), kv_heads, group, -1, dim})
                              .permute({1, 0, 2, 3, 4})
                              .reshape({kv_heads, -1, dim});
  const at::Tensor moment = at::matmul(rows.transpose(1, 2), rows);
  const at::Tensor trace = moment.diagonal(0, 1, 2).sum(-1).clamp_min(1e-12).view({kv_heads, 1, 1});
  return moment * (static_cast<double>(dim) / trace);
}

LayerError layer_error(const LowRankLayer& factors, const at::Tensor& key_weight, const at::Tensor& value_weight,
                       const at::Tensor& inputs, const at::Tensor& positions, const at::Tensor& inv_freq,
                       int64_t kv_heads, const LatentQuantization& quantization, const at::Tensor& query_moment,
                       double norm_eps) {
  const at::Tensor x = inputs.to(at::kFloat);
  // The model is the frozen teacher: no gradient reaches its weights.
  const at::Tensor key_projection = key_weight.detach().to(at::kFloat),
                   value_projection = value_weight.detach().to(at::kFloat);
  // Padding rows are weighted 0. The projections' biases cancel in the differences and are left out, except before a
  // per-head key norm (Qwen3's k_norm), which sees the biased keys and does not commute with the difference.
  const at::Tensor valid = (positions >= 0).to(at::kFloat).view({positions.size(0), 1, positions.size(1), 1});
  const RopeAngles angles = rope_angles(inv_freq, positions, at::kFloat);
  auto as_keys = [&](at::Tensor projected) {
    if (!factors.key_norm.defined()) return apply_rope(heads_first(projected, kv_heads), angles);
    if (factors.key_bias.defined()) projected = projected + factors.key_bias;
    return apply_rope(rms_normalized(heads_first(projected, kv_heads), factors.key_norm, norm_eps), angles);
  };
  const at::Tensor keys = as_keys(at::matmul(x, key_projection.t()));
  const at::Tensor key_latents = fake_quantize_key_latents(at::matmul(x, factors.key_down.t()), quantization);
  const at::Tensor rebuilt_keys = as_keys(at::matmul(key_latents, factors.key_up.t()));
  const at::Tensor values = heads_first(at::matmul(x, value_projection.t()), kv_heads);
  const at::Tensor value_latents = fake_quantize_value_latents(at::matmul(x, factors.value_down.t()), quantization);
  const at::Tensor rebuilt_values = heads_first(at::matmul(value_latents, factors.value_up.t()), kv_heads);
  // e·e, or eᵀ·M·e per KV head: [batch, kv_heads, tokens]
  auto squared = [&](const at::Tensor& e) {
    if (!query_moment.defined()) return e.square().sum(-1);
    return (at::matmul(e, query_moment.unsqueeze(0)) * e).sum(-1);
  };
  const at::Tensor token_weight = valid.squeeze(-1);
  LayerError error;
  error.key_error = (squared(keys - rebuilt_keys) * token_weight).sum();
  error.value_error = ((values - rebuilt_values).square() * valid).sum();
  error.key_energy = (squared(keys) * token_weight).sum();
  error.value_energy = (values.square() * valid).sum();
  return error;
}

ReconstructionObjective::ReconstructionObjective(Transformer model, std::vector<LowRankLayer>& factors,
                                                 ReconstructionConfig config)
    : model_(std::move(model)), factors_(factors), config_(std::move(config)) {}

std::vector<at::Tensor> ReconstructionObjective::trainable_parameters() {
  std::vector<at::Tensor> parameters;
  for (const LowRankLayer& layer : factors_)
    for (const at::Tensor& tensor : {layer.key_down, layer.key_up, layer.value_down, layer.value_up})
      parameters.push_back(tensor);
  return parameters;
}

std::vector<std::pair<std::string, at::Tensor>> ReconstructionObjective::checkpoint_tensors() {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (size_t l = 0; l < factors_.size(); ++l) {
    const std::string prefix = "layers." + std::to_string(l) + ".";
    tensors.emplace_back(prefix + "key_down", factors_[l].key_down);
    tensors.emplace_back(prefix + "key_up", factors_[l].key_up);
    tensors.emplace_back(prefix + "value_down", factors_[l].value_down);
    tensors.emplace_back(prefix + "value_up", factors_[l].value_up);
  }
  return tensors;
}

MicroBatchLoss ReconstructionObjective::micro_batch_loss(int64_t step, int64_t micro_batch) {
  const TokenBatch batch = config_.batches(config_.seed, step, micro_batch);
  const at::Device device = model_->output_weight().device();
  const at::Tensor positions = batch.positions.to(device);
  const std::vector<at::Tensor> inputs = attention_inputs(model_, batch.input_ids.to(device), positions);
  MicroBatchLoss result;
  result.tokens = (batch.positions >= 0).sum().item<int64_t>();  // on the CPU: no device sync
  // valid tokens × kv_heads × head_dim: the elements each layer's squared errors sum over
  const auto elements =
      static_cast<double>(std::max<int64_t>(result.tokens, 1) * model_->config.num_kv_heads * model_->config.head_dim);
  at::Tensor loss = at::zeros({}, at::TensorOptions().device(device));
  at::Tensor key_error = at::zeros({}, loss.options()), value_error = at::zeros({}, loss.options());
  for (size_t l = 0; l < factors_.size(); ++l) {
    const auto& attention = model_->model->layers[l]->as<DecoderLayer>()->self_attn;
    const at::Tensor moment =
        config_.score_loss
            ? query_moment(attention->q_proj->weight, inputs[l], positions, model_->inv_freq, model_->config.num_heads,
                           model_->config.num_kv_heads, query_norm(attention), model_->config.rms_norm_eps)
            : at::Tensor();
    const LayerError error = layer_error(factors_[l], attention->k_proj->weight, attention->v_proj->weight, inputs[l],
                                         positions, model_->inv_freq, model_->config.num_kv_heads, config_.quantization,
                                         moment, model_->config.rms_norm_eps);
    // CSKV's loss: MSE of keys after RoPE (or of the scores they give, with score_loss) plus MSE of values,
    // summed over layers.
    loss = loss + (error.key_error + error.value_error) / elements;
    key_error += (error.key_error / error.key_energy).detach();
    value_error += (error.value_error / error.value_energy).detach();
  }
  const auto layers = static_cast<double>(factors_.size());
  result.loss = loss;
  // One device sync for the logged errors, not one per layer.
  const at::Tensor errors = at::stack({key_error, value_error}).cpu();
  result.metrics = {{"key_relative_error", errors[0].item<double>() / layers},
                    {"value_relative_error", errors[1].item<double>() / layers}};
  return result;
}

at::Tensor ReconstructionObjective::relative_errors(int64_t batches) {
  torch::NoGradGuard no_grad;
  const uint64_t held_out = mix_seed({config_.seed, 0x4b56});  // never a training batch's seed
  const at::Device device = model_->output_weight().device();
  const auto layers = static_cast<int64_t>(factors_.size());
  // key error, key energy, value error, value energy, key score error, key score energy
  at::Tensor sums = at::zeros({layers, 6}, at::kDouble);
  for (int64_t i = 0; i < batches; ++i) {
    const TokenBatch batch = config_.batches(held_out, i, 0);
    const at::Tensor positions = batch.positions.to(device);
    const std::vector<at::Tensor> inputs = attention_inputs(model_, batch.input_ids.to(device), positions);
    for (int64_t l = 0; l < layers; ++l) {
      const auto& attention = model_->model->layers[l]->as<DecoderLayer>()->self_attn;
      const LayerError plain = layer_error(factors_[l], attention->k_proj->weight, attention->v_proj->weight, inputs[l],
                                           positions, model_->inv_freq, model_->config.num_kv_heads,
                                           config_.quantization, at::Tensor(), model_->config.rms_norm_eps);
      const at::Tensor moment =
          query_moment(attention->q_proj->weight, inputs[l], positions, model_->inv_freq, model_->config.num_heads,
                       model_->config.num_kv_heads, query_norm(attention), model_->config.rms_norm_eps);
      const LayerError scores = layer_error(factors_[l], attention->k_proj->weight, attention->v_proj->weight,
                                            inputs[l], positions, model_->inv_freq, model_->config.num_kv_heads,
                                            config_.quantization, moment, model_->config.rms_norm_eps);
      sums[l] += at::stack({plain.key_error, plain.key_energy, plain.value_error, plain.value_energy, scores.key_error,
                            scores.key_energy})
                     .to(at::kCPU, at::kDouble);
    }
  }
  return at::stack({sums.select(1, 0) / sums.select(1, 1), sums.select(1, 2) / sums.select(1, 3),
                    sums.select(1, 4) / sums.select(1, 5)},
                   1);
}

}  // namespace kvforge::cskv
