#include "trainers/kvpred/auxiliary.h"

#include <torch/utils.h>

#include <string>

#include "runtime/input_error.h"

namespace kvforge::kvpred {
namespace {

// Copies every auxiliary parameter from the base parameter `source_name` names for it.
template <typename SourceName>
void copy_weights(KvPredictor& predictor, const Transformer& source, SourceName source_name) {
  torch::NoGradGuard no_grad;
  const auto from = source->named_parameters();
  for (auto& item : predictor->auxiliary->named_parameters()) {
    const at::Tensor* found = from.find(source_name(item.key()));
    if (found == nullptr || found->sizes() != item.value().sizes())
      fail_input("kv prediction", item.key(), "the source model has no parameter of this shape to copy");
    item.value().copy_(*found);
  }
}

// [batch, heads, tokens, head_dim] -> the valid tokens' merged heads [n, heads·head_dim] in float64.
at::Tensor valid_rows(const at::Tensor& x, const at::Tensor& valid) {
  at::Tensor merged = x.transpose(1, 2).reshape({x.size(0) * x.size(2), x.size(1) * x.size(3)});
  return merged.index({valid.reshape({-1})}).to(at::kDouble);
}

}  // namespace

std::vector<int64_t> even_layer_map(int64_t base_layers, int64_t auxiliary_layers) {
  std::vector<int64_t> map;
  for (int64_t i = 0; i < base_layers; ++i) map.push_back(i * auxiliary_layers / base_layers);
  return map;
}

KvPredictor pruned_predictor(const Transformer& base, int64_t every, std::vector<int64_t> layer_map,
                             const at::TensorOptions& options) {
  const ModelConfig& config = base->config;
  if (every < 1 || every > config.num_layers)
    fail_input("recipe", "auxiliary.every", "expected 1.." + std::to_string(config.num_layers));
  ModelConfig auxiliary = config;
  auxiliary.num_layers = (config.num_layers + every - 1) / every;
  auxiliary.sliding_window.clear();
  for (int64_t j = 0; j < auxiliary.num_layers; ++j)
    auxiliary.sliding_window.push_back(config.sliding_window[j * every]);
  if (layer_map.empty())
    for (int64_t i = 0; i < config.num_layers; ++i) layer_map.push_back(i / every);
  validate_layer_map(layer_map, config.num_layers, auxiliary.num_layers, "recipe", "auxiliary.layer_map");
  KvPredictor predictor(config, auxiliary, std::move(layer_map), options);
  const std::string layers = "model.layers.";
  copy_weights(predictor, base, [&](const std::string& name) {
    if (name.rfind(layers, 0) != 0) return name;
    const size_t dot = name.find('.', layers.size());
    const int64_t j = std::stoll(name.substr(layers.size(), dot - layers.size()));
    return layers + std::to_string(j * every) + name.substr(dot);
  });
  return predictor;
}

KvPredictor separate_predictor(const Transformer& base, const Transformer& auxiliary, std::vector<int64_t> layer_map,
                               const at::TensorOptions& options) {
  const ModelConfig& config = base->config;
  if (layer_map.empty()) layer_map = even_layer_map(config.num_layers, auxiliary->config.num_layers);
  validate_layer_map(layer_map, config.num_layers, auxiliary->config.num_layers, "recipe", "auxiliary.layer_map");
  KvPredictor predictor(config, auxiliary->config, std::move(layer_map), options);
  copy_weights(predictor, auxiliary, [](const std::string& name) { return name; });
  return predictor;
}

int64_t fit_predictors(KvPredictor& predictor, Transformer& base, const BatchSource& batches, uint64_t seed,
                       int64_t count, double ridge) {
  torch::NoGradGuard no_grad;
  const ModelConfig& config = base->config;
  const at::Device device = base->output_weight().device();
  const int64_t aux_layers = predictor->auxiliary->config.num_layers;
  // Second moments of [aux K | 1] and [aux V | 1] per auxiliary layer, cross moments with the base's per base layer.
  std::vector<at::Tensor> key_gram(aux_layers), value_gram(aux_layers), key_cross(config.num_layers),
      value_cross(config.num_layers);
  int64_t tokens = 0;
  auto accumulate = [](at::Tensor& sum, const at::Tensor& term) { sum = sum.defined() ? sum + term : term; };
  auto with_ones = [](const at::Tensor& x) { return at::cat({x, at::ones({x.size(0), 1}, x.options())}, 1); };
  for (int64_t i = 0; i < count; ++i) {
    const TokenBatch batch = batches(seed, i, 0);
    const at::Tensor ids = batch.input_ids.to(device), positions = batch.positions.to(device);
    const at::Tensor valid = positions >= 0;
    PreRopeRecorder base_kv(config.num_layers), aux_kv(aux_layers);
    base->hidden_states(ids, positions, &base_kv, /*causal_prefix=*/true);
    predictor->auxiliary->hidden_states(ids, positions, &aux_kv, /*causal_prefix=*/true);
    std::vector<at::Tensor> aux_keys(aux_layers), aux_values(aux_layers);
    for (int64_t j = 0; j < aux_layers; ++j) {
      aux_keys[j] = with_ones(valid_rows(aux_kv.keys(j), valid));
      aux_values[j] = with_ones(valid_rows(aux_kv.values(j), valid));
      accumulate(key_gram[j], aux_keys[j].t().mm(aux_keys[j]));
      accumulate(value_gram[j], aux_values[j].t().mm(aux_values[j]));
    }
    for (int64_t l = 0; l < config.num_layers; ++l) {
      const int64_t j = predictor->layer_map[l];
      accumulate(key_cross[l], aux_keys[j].t().mm(valid_rows(base_kv.keys(l), valid)));
      accumulate(value_cross[l], aux_values[j].t().mm(valid_rows(base_kv.values(l), valid)));
    }
    tokens += valid.sum().item<int64_t>();
  }
  auto solve = [ridge](const at::Tensor& gram, const at::Tensor& cross) {
    const int64_t inputs = gram.size(0) - 1;  // the last row and column belong to the bias: not regularised
    const double mean_eigenvalue = gram.diagonal().narrow(0, 0, inputs).mean().item<double>();
    at::Tensor damping = at::full({gram.size(0)}, ridge * mean_eigenvalue + 1e-12, gram.options());
    damping[inputs] = 0;
    return at::linalg_solve(gram + at::diag(damping), cross);  // [inputs + 1, outputs]
  };
  for (int64_t l = 0; l < config.num_layers; ++l) {
    const int64_t j = predictor->layer_map[l];
    for (auto [list, gram, cross] : {std::tuple{&predictor->key_predictors, &key_gram[j], &key_cross[l]},
                                     std::tuple{&predictor->value_predictors, &value_gram[j], &value_cross[l]}}) {
      const at::Tensor solution = solve(*gram, *cross);
      LinearImpl* linear = (*list)[l]->as<Linear>();
      const int64_t inputs = solution.size(0) - 1;
      linear->weight.copy_(solution.narrow(0, 0, inputs).t());
      linear->bias.copy_(solution[inputs]);
    }
  }
  return tokens;
}

}  // namespace kvforge::kvpred
