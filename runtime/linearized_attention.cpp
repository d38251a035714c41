#include "runtime/linearized_attention.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/utils.h>

#include <cmath>
#include <map>
#include <stdexcept>

namespace kvforge {
namespace {

at::Tensor repeat_heads(const at::Tensor& x, int64_t heads) {
  const int64_t group = heads / x.size(1);
  return group > 1 ? x.repeat_interleave(group, 1) : x;
}

const char* const kLoraNames[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};

// {in, out} features of the projection a LoRA target adapts.
std::pair<int64_t, int64_t> lora_shape(const ModelConfig& model, int index) {
  const int64_t query_width = model.num_heads * model.head_dim, kv_width = model.num_kv_heads * model.head_dim;
  switch (index) {
    case 0:
      return {model.hidden_size, query_width};
    case 1:
    case 2:
      return {model.hidden_size, kv_width};
    default:
      return {query_width, model.hidden_size};
  }
}

int lora_index(LoraTarget target) {
  switch (target) {
    case kLoraQuery:
      return 0;
    case kLoraKey:
      return 1;
    case kLoraValue:
      return 2;
    default:
      return 3;
  }
}

}  // namespace

const char* variant_name(const LinearizationConfig& config) {
  if (config.attention.kind == HybridKind::kLolcats) return "LoLCATs-style";
  return config.gates ? "Lizard" : "ungated Lizard";
}

LinearizedLayerImpl::LinearizedLayerImpl(const ModelConfig& model, const LinearizationConfig& config,
                                         const at::TensorOptions& options) {
  const int64_t heads = model.num_heads, head_dim = model.head_dim, features = config.feature_dim;
  const at::Tensor identity = at::eye(head_dim, features, options).unsqueeze(0).repeat({heads, 1, 1});
  query_map = register_parameter("query_map", identity.clone());
  key_map = register_parameter("key_map", identity.clone());
  if (config.attention.kind == HybridKind::kLizard && config.gates) {
    gate_weight = register_parameter("gate_weight", at::zeros({heads, model.hidden_size}, options));
    gate_bias = register_parameter("gate_bias", at::full({heads}, config.gate_bias, options));
  }
  if (config.attention.kind == HybridKind::kLizard) {
    if (config.sinks > 0)
      sink_logits = register_parameter("sink_logits", at::full({heads, config.sinks}, config.sink_init, options));
  } else {
    window_logits = register_parameter("window_logits", at::full({heads}, config.window_logit_init, options));
  }
  if (config.lora.rank < 1) return;
  for (int index = 0; index < 4; ++index) {
    if ((config.lora.targets & (1 << index)) == 0) continue;
    const auto [in, out] = lora_shape(model, index);
    const std::string name = kLoraNames[index];
    if (config.lora.merged) {
      merged_weight[index] = register_parameter(name + "_weight", at::zeros({out, in}, options));
    } else {
      lora_a[index] = register_parameter(name + "_lora_a", at::zeros({config.lora.rank, in}, options));
      lora_b[index] = register_parameter(name + "_lora_b", at::zeros({out, config.lora.rank}, options));
    }
  }
}

Linearization::Linearization(const ModelConfig& model, LinearizationConfig config, const at::TensorOptions& options)
    : model(model), config(std::move(config)) {
  if (this->config.feature_dim < 1) throw std::invalid_argument("linearization: feature_dim must be >= 1");
  for (int64_t l = 0; l < model.num_layers; ++l) layers.push_back(LinearizedLayer(model, this->config, options));
}

std::vector<at::Tensor> Linearization::parameters() const {
  std::vector<at::Tensor> all;
  for (const LinearizedLayer& layer : layers)
    for (const at::Tensor& parameter : layer->parameters()) all.push_back(parameter);
  return all;
}

std::vector<std::pair<std::string, at::Tensor>> Linearization::named_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> all;
  for (size_t l = 0; l < layers.size(); ++l)
    for (const auto& item : layers[l]->named_parameters())
      all.emplace_back("layers." + std::to_string(l) + "." + item.key(), item.value());
  return all;
}

void Linearization::copy_shared_parameters(const Linearization& source) {
  torch::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> by_name;
  for (const auto& [name, parameter] : source.named_parameters()) by_name[name] = parameter;
  for (const auto& [name, parameter] : named_parameters())
    if (auto found = by_name.find(name); found != by_name.end()) parameter.copy_(found->second);
}

Linearization Linearization::on(const at::TensorOptions& options) const {
  Linearization copy(model, config, options);
  copy.copy_shared_parameters(*this);
  for (const at::Tensor& parameter : copy.parameters()) parameter.set_requires_grad(false);
  return copy;
}

Linearization Linearization::with_lora(const LoraConfig& lora, uint64_t seed) const {
  if (lora.rank < 1) throw std::invalid_argument("linearization: LoRA rank must be >= 1");
  if (config.lora.rank > 0) throw std::logic_error("linearization: the adapters are already there");
  LinearizationConfig adapted = config;
  adapted.lora = lora;
  adapted.lora.merged = false;
  const at::TensorOptions options = parameters().front().options();
  Linearization copy(model, adapted, options);
  copy.copy_shared_parameters(*this);
  torch::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (LinearizedLayer& layer : copy.layers)
    for (const at::Tensor& a : layer->lora_a)
      if (a.defined()) {
        const double bound = 1.0 / std::sqrt(static_cast<double>(a.size(1)));
        a.copy_(at::empty(a.sizes(), at::kFloat).uniform_(-bound, bound, generator));
      }
  return copy;
}

Linearization Linearization::merged(const std::vector<std::array<at::Tensor, 4>>& base_weights) const {
  if (config.lora.rank < 1 || config.lora.merged) throw std::logic_error("linearization: no adapters to merge");
  if (base_weights.size() != layers.size()) throw std::invalid_argument("linearization: one weight set per layer");
  LinearizationConfig folded = config;
  folded.lora.merged = true;
  Linearization copy(model, folded, parameters().front().options());
  copy.copy_shared_parameters(*this);  // all but the adapters, which become merged weights below
  torch::NoGradGuard no_grad;
  for (size_t l = 0; l < layers.size(); ++l) {
    for (int index = 0; index < 4; ++index) {
      if (!layers[l]->lora_a[index].defined()) continue;
      const at::Tensor& weight = base_weights[l][index];
      const at::Tensor delta =
          at::matmul(layers[l]->lora_b[index].to(at::kFloat), layers[l]->lora_a[index].to(at::kFloat));
      copy.layers[l]->merged_weight[index].set_data(
          (weight.to(at::kCPU, at::kFloat) + config.lora.scale() * delta.cpu()).to(weight.scalar_type()));
      copy.layers[l]->merged_weight[index].set_requires_grad(false);
    }
  }
  return copy;
}

std::vector<at::Tensor> Linearization::lora_parameters() const {
  std::vector<at::Tensor> all;
  for (const LinearizedLayer& layer : layers)
    for (int index = 0; index < 4; ++index)
      if (layer->lora_a[index].defined()) {
        all.push_back(layer->lora_a[index]);
        all.push_back(layer->lora_b[index]);
      }
  return all;
}

at::Tensor Linearization::project(int64_t layer, LoraTarget target, const at::Tensor& input,
                                  const at::Tensor& base_weight, const at::Tensor& base_bias) const {
  const LinearizedLayer& parameters = layers.at(layer);
  const int index = lora_index(target);
  if (parameters->merged_weight[index].defined())
    return at::linear(input, parameters->merged_weight[index].to(input.scalar_type()), base_bias);
  at::Tensor out = at::linear(input, base_weight, base_bias);
  if (!parameters->lora_a[index].defined()) return out;
  const at::Tensor low = at::linear(input, parameters->lora_a[index].to(input.scalar_type()));
  return out + at::linear(low, parameters->lora_b[index].to(input.scalar_type())) * config.lora.scale();
}

HybridInputs Linearization::inputs(int64_t layer, const at::Tensor& x, const at::Tensor& queries,
                                   const at::Tensor& keys, const at::Tensor& rotated_queries,
                                   const at::Tensor& rotated_keys, const at::Tensor& values) const {
  const LinearizedLayer& parameters = layers.at(layer);
  const int64_t heads = queries.size(1);
  const at::Tensor feature_queries = config.features_after_rope ? rotated_queries : queries;
  const at::Tensor feature_keys = repeat_heads(config.features_after_rope ? rotated_keys : keys, heads);
  HybridInputs inputs;
  inputs.query_features = hedgehog_features(feature_queries, parameters->query_map.to(queries.scalar_type()));
  inputs.key_features = hedgehog_features(feature_keys, parameters->key_map.to(queries.scalar_type()));
  inputs.queries = rotated_queries;
  inputs.keys = repeat_heads(rotated_keys, heads);
  inputs.values = repeat_heads(values, heads);
  if (parameters->gate_weight.defined()) {
    // log γ = log σ(W_γ x + b) per head and token: [batch, heads, tokens]
    const at::Tensor logits =
        at::linear(x, parameters->gate_weight.to(x.scalar_type()), parameters->gate_bias.to(x.scalar_type()));
    inputs.log_gates = at::log_sigmoid(logits.to(at::kFloat)).to(queries.scalar_type()).transpose(1, 2);
  }
  inputs.sink_logits = parameters->sink_logits;      // undefined unless Lizard with sinks
  inputs.window_logits = parameters->window_logits;  // undefined unless LoLCATs
  return inputs;
}

at::Tensor Linearization::attend(int64_t layer, const at::Tensor& x, const at::Tensor& queries, const at::Tensor& keys,
                                 const at::Tensor& rotated_queries, const at::Tensor& rotated_keys,
                                 const at::Tensor& values) const {
  return hybrid_attention_chunked(inputs(layer, x, queries, keys, rotated_queries, rotated_keys, values),
                                  config.attention, config.chunk);
}

at::Tensor Linearization::decode(int64_t layer, LinearizedCache& cache, const at::Tensor& x, const at::Tensor& queries,
                                 const at::Tensor& keys, const at::Tensor& rotated_queries,
                                 const at::Tensor& rotated_keys, const at::Tensor& values,
                                 const at::Tensor& positions) const {
  HybridInputs in = inputs(layer, x, queries, keys, rotated_queries, rotated_keys, values);
  in.key_valid = positions >= 0;
  HybridDecodeState& state = cache.state(layer, in.queries.size(0), in.queries.size(1), in.query_features.size(3),
                                         in.queries.size(3), in.values.size(3), in.values.options());
  if (state.tokens() == 0) {
    const at::Tensor out = hybrid_attention_chunked(in, config.attention, config.chunk);
    state.absorb(in);
    return out;
  }
  std::vector<at::Tensor> outputs;
  for (int64_t t = 0; t < in.queries.size(2); ++t) {
    auto at_t = [t](const at::Tensor& v) { return v.narrow(2, t, 1); };
    outputs.push_back(state.step(at_t(in.query_features), at_t(in.key_features), at_t(in.queries), at_t(in.keys),
                                 at_t(in.values), in.log_gates.defined() ? at_t(in.log_gates) : at::Tensor(),
                                 in.sink_logits, in.window_logits, in.key_valid.select(1, t)));
  }
  return outputs.size() == 1 ? outputs.front() : at::cat(outputs, 2);
}

CachedKV LinearizedCache::update(int64_t, const at::Tensor&, const at::Tensor&, const at::Tensor&) {
  throw std::logic_error("LinearizedCache: linearized layers keep a state; attach the Linearization to the model");
}

int64_t LinearizedCache::length(int64_t layer) const {
  const auto& state = states_.at(layer);
  return state ? state->tokens() : 0;
}

int64_t LinearizedCache::bytes() const {
  int64_t total = 0;
  for (const auto& state : states_)
    if (state) total += state->bytes();
  return total;
}

HybridDecodeState& LinearizedCache::state(int64_t layer, int64_t batch, int64_t heads, int64_t features,
                                          int64_t head_dim, int64_t value_dim, const at::TensorOptions& options) {
  auto& state = states_.at(layer);
  if (!state) state.emplace(config_.attention, batch, heads, features, head_dim, value_dim, options);
  return *state;
}

void Linearization::add_transfer_loss(const at::Tensor& student, const at::Tensor& teacher,
                                      const at::Tensor& positions) {
  // [batch, heads, tokens, head_dim]; padding (position -1) excluded from the mean.
  const at::Tensor valid = (positions >= 0).unsqueeze(1).unsqueeze(3).to(at::kFloat);
  const at::Tensor squared = (student.to(at::kFloat) - teacher.to(at::kFloat)).square() * valid;
  const double per_token = static_cast<double>(student.size(1) * student.size(3));
  const at::Tensor mse = squared.sum() / (valid.sum() * per_token).clamp_min(1.0);
  transfer_loss = transfer_loss.defined() ? transfer_loss + mse : mse;
}

}  // namespace kvforge
