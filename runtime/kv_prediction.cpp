#include "runtime/kv_prediction.h"

#include "runtime/input_error.h"
#include "runtime/rope.h"

namespace kvforge {
namespace {

// [batch, heads, tokens, head_dim] -> merged heads -> predictor -> [batch, out_heads, tokens, out_head_dim]
at::Tensor project(torch::nn::ModuleList& predictors, int64_t layer, const at::Tensor& x, int64_t out_heads,
                   int64_t out_head_dim) {
  const int64_t batch = x.size(0), tokens = x.size(2);
  at::Tensor merged = x.transpose(1, 2).reshape({batch, tokens, x.size(1) * x.size(3)});
  at::Tensor out = predictors[layer]->as<Linear>()->forward(merged);
  return out.view({batch, tokens, out_heads, out_head_dim}).transpose(1, 2);
}

}  // namespace

KvPredictorImpl::KvPredictorImpl(const ModelConfig& base, const ModelConfig& auxiliary_config,
                                 std::vector<int64_t> layer_map, const at::TensorOptions& options)
    : base_config(base), layer_map(std::move(layer_map)) {
  validate_layer_map(this->layer_map, base.num_layers, auxiliary_config.num_layers, "kv prediction", "layer_map");
  if (auxiliary_config.vocab_size != base.vocab_size)
    fail_input(auxiliary_config.source, "vocab_size",
               "the auxiliary model must share the base model's vocabulary (" + std::to_string(base.vocab_size) +
                   "), got " + std::to_string(auxiliary_config.vocab_size));
  auxiliary = register_module("auxiliary", Transformer(auxiliary_config, options));
  key_predictors = register_module("key_predictors", torch::nn::ModuleList());
  value_predictors = register_module("value_predictors", torch::nn::ModuleList());
  const int64_t in = auxiliary_config.num_kv_heads * auxiliary_config.head_dim;
  const int64_t out = base.num_kv_heads * base.head_dim;
  for (int64_t l = 0; l < base.num_layers; ++l) {
    key_predictors->push_back(Linear(in, out, /*bias=*/true, options));
    value_predictors->push_back(Linear(in, out, /*bias=*/true, options));
  }
}

PredictedKV KvPredictorImpl::predict(const at::Tensor& ids, const at::Tensor& positions, bool causal_prefix,
                                     at::Tensor* logits) {
  PreRopeRecorder recorder(auxiliary->config.num_layers);
  at::Tensor hidden = auxiliary->hidden_states(ids, positions, &recorder, causal_prefix);
  if (logits != nullptr) *logits = at::linear(hidden, auxiliary->output_weight());
  PredictedKV predicted;
  for (int64_t l = 0; l < base_config.num_layers; ++l) {
    const int64_t source = layer_map[l];
    predicted.keys.push_back(
        project(key_predictors, l, recorder.keys(source), base_config.num_kv_heads, base_config.head_dim));
    predicted.values.push_back(
        project(value_predictors, l, recorder.values(source), base_config.num_kv_heads, base_config.head_dim));
  }
  return predicted;
}

void KvPredictorImpl::set_identity() {
  torch::NoGradGuard no_grad;
  for (const torch::nn::ModuleList* list : {&key_predictors, &value_predictors}) {
    for (const auto& module : **list) {
      Linear linear = std::dynamic_pointer_cast<LinearImpl>(module);
      if (linear->weight.size(0) != linear->weight.size(1))
        fail_input("kv prediction", "predictors",
                   "identity predictors need equal auxiliary and base K/V widths, got " +
                       std::to_string(linear->weight.size(1)) + " -> " + std::to_string(linear->weight.size(0)));
      linear->weight.copy_(at::eye(linear->weight.size(0), linear->weight.options()));
      linear->bias.zero_();
    }
  }
}

KvPredictionWeights::KvPredictionWeights(ModelConfig base, ModelConfig auxiliary, std::vector<int64_t> layer_map,
                                         std::map<std::string, at::Tensor> parameters, std::string source)
    : base_(std::move(base)),
      auxiliary_(std::move(auxiliary)),
      layer_map_(std::move(layer_map)),
      parameters_(std::move(parameters)),
      source_(std::move(source)) {
  if (!parameters_.empty())  // checks every name and shape now, not at the first prompt
    on(at::TensorOptions().dtype(parameters_.begin()->second.scalar_type()));
}

KvPredictor KvPredictionWeights::on(const at::TensorOptions& options) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string key = options.device().str() + "/" + std::string(c10::toString(options.dtype().toScalarType()));
  auto found = loaded_.find(key);
  if (found != loaded_.end()) return found->second;
  KvPredictor predictor(base_, auxiliary_, layer_map_, options);
  torch::NoGradGuard no_grad;
  for (auto& item : predictor->named_parameters()) {
    auto stored = parameters_.find(item.key());
    if (stored == parameters_.end()) fail_input(source_, item.key(), "missing");
    if (stored->second.sizes() != item.value().sizes())
      fail_input(source_, item.key(),
                 "expected shape " + c10::str(item.value().sizes()) + ", got " + c10::str(stored->second.sizes()));
    item.value().copy_(stored->second);
    item.value().set_requires_grad(false);
  }
  predictor->eval();
  loaded_.emplace(key, predictor);
  return predictor;
}

void validate_layer_map(const std::vector<int64_t>& layer_map, int64_t base_layers, int64_t auxiliary_layers,
                        const std::string& source, const std::string& field) {
  if (static_cast<int64_t>(layer_map.size()) != base_layers)
    fail_input(source, field,
               "expected one auxiliary layer per base layer (" + std::to_string(base_layers) + " entries), got " +
                   std::to_string(layer_map.size()));
  for (size_t i = 0; i < layer_map.size(); ++i)
    if (layer_map[i] < 0 || layer_map[i] >= auxiliary_layers)
      fail_input(source, field,
                 "entry " + std::to_string(i) + " is " + std::to_string(layer_map[i]) +
                     "; the auxiliary model's layers are 0.." + std::to_string(auxiliary_layers - 1));
}

void PreRopeRecorder::pre_rope(int64_t layer, const at::Tensor& keys, const at::Tensor& values) {
  keys_.at(layer) = keys;
  values_.at(layer) = values;
}

CachedKV PreRopeRecorder::update(int64_t, const at::Tensor& keys, const at::Tensor& values,
                                 const at::Tensor& positions) {
  return {keys, values, positions};
}

PredictedKVCache::PredictedKVCache(const PredictedKV& predicted, const at::Tensor& inv_freq,
                                   const at::Tensor& positions, const at::Tensor& own_from)
    : values_(predicted.values), positions_(positions) {
  if (own_from.defined()) own_ = (positions >= own_from.to(positions.device()).unsqueeze(1)).unsqueeze(1).unsqueeze(3);
  if (predicted.keys.empty()) return;
  const RopeAngles rope = rope_angles(inv_freq, positions, predicted.keys[0].scalar_type());
  for (const at::Tensor& keys : predicted.keys) keys_.push_back(apply_rope(keys, rope));
}

CachedKV PredictedKVCache::update(int64_t layer, const at::Tensor& keys, const at::Tensor& values, const at::Tensor&) {
  // In the base's dtype: a float32 auxiliary outside autocast predicts float32 for a bf16 base.
  at::Tensor predicted_keys = keys_.at(layer).to(keys.scalar_type());
  at::Tensor predicted_values = values_.at(layer).to(values.scalar_type());
  if (own_.defined()) {
    predicted_keys = at::where(own_, keys, predicted_keys);
    predicted_values = at::where(own_, values, predicted_values);
  }
  return {predicted_keys, predicted_values, positions_};
}

int64_t PredictedKVCache::bytes() const {
  int64_t total = 0;
  for (size_t l = 0; l < keys_.size(); ++l) total += keys_[l].nbytes() + values_[l].nbytes();
  return total;
}

at::Tensor predicted_prefill(Transformer& base, KvPredictor& predictor, const at::Tensor& ids,
                             const at::Tensor& positions, KVCache& cache) {
  const int64_t tokens = ids.size(1);
  if (tokens > 1) {
    const at::Tensor prompt_ids = ids.narrow(1, 0, tokens - 1), prompt_positions = positions.narrow(1, 0, tokens - 1);
    const PredictedKV predicted = predictor->predict(prompt_ids, prompt_positions);
    const at::ScalarType dtype = base->output_weight().scalar_type();
    const RopeAngles rope = rope_angles(base->inv_freq, prompt_positions, dtype);
    for (int64_t l = 0; l < base->config.num_layers; ++l)
      cache.update(l, apply_rope(predicted.keys[l].to(dtype), rope), predicted.values[l].to(dtype), prompt_positions);
  }
  return base->forward(ids.narrow(1, tokens - 1, 1), positions.narrow(1, tokens - 1, 1), &cache, /*last_only=*/true);
}

}  // namespace kvforge
