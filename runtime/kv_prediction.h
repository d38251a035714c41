#pragma once
// KV Prediction (Horton et al., 2024): a small auxiliary model reads the prompt and, per base layer, a linear
// predictor maps the pre-RoPE keys and values of the auxiliary layer `layer_map` names to the base layer's. The base
// model's cache is filled from the prediction, so the base reads only the prompt's last token before it decodes on its
// own: time to first token drops to roughly the auxiliary's.
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/kv_cache.h"
#include "runtime/transformer.h"

namespace kvforge {

// Pre-RoPE keys and values per base layer, [batch, base kv_heads, tokens, base head_dim] each.
struct PredictedKV {
  std::vector<at::Tensor> keys;
  std::vector<at::Tensor> values;
};

struct KvPredictorImpl : torch::nn::Module {
  // layer_map[i]: the auxiliary layer base layer i reads (checked by validate_layer_map). Predictor parameters are
  // created uninitialised, like the auxiliary's: a checkpoint, set_identity() or a trainer's fit fills them.
  KvPredictorImpl(const ModelConfig& base, const ModelConfig& auxiliary, std::vector<int64_t> layer_map,
                  const at::TensorOptions& options);

  // The auxiliary over ids/positions (laid out as Transformer::forward takes them) and every base layer's prediction;
  // the auxiliary's logits [batch, tokens, vocab] go to `logits` when given.
  PredictedKV predict(const at::Tensor& ids, const at::Tensor& positions, bool causal_prefix = false,
                      at::Tensor* logits = nullptr);
  // Every predictor the identity (K/V widths must match): with an auxiliary that copies the base, the prediction is
  // the base's own cache.
  void set_identity();

  ModelConfig base_config;
  std::vector<int64_t> layer_map;
  Transformer auxiliary{nullptr};
  // One Linear per base layer, weight [base kv_heads·head_dim, auxiliary kv_heads·head_dim] plus bias, on merged heads.
  torch::nn::ModuleList key_predictors{nullptr}, value_predictors{nullptr};
};
TORCH_MODULE(KvPredictor);

// A trained predictor as an artifact holds it: CPU tensors by parameter name ("auxiliary.model.layers.0...",
// "key_predictors.3.weight"), made into a module per device and dtype on first use and shared after.
class KvPredictionWeights {
 public:
  // Every parameter of the module must be in `parameters` with its shape (InputError naming `source` and the name).
  KvPredictionWeights(ModelConfig base, ModelConfig auxiliary, std::vector<int64_t> layer_map,
                      std::map<std::string, at::Tensor> parameters, std::string source);
  // The predictor on `options`' device in its dtype, gradients off.
  KvPredictor on(const at::TensorOptions& options) const;
  const ModelConfig& auxiliary_config() const { return auxiliary_; }
  const std::vector<int64_t>& layer_map() const { return layer_map_; }

 private:
  ModelConfig base_, auxiliary_;
  std::vector<int64_t> layer_map_;
  std::map<std::string, at::Tensor> parameters_;
  std::string source_;
  mutable std::mutex mutex_;
  mutable std::map<std::string, KvPredictor> loaded_;  // by device and dtype
};

// The layer map's rules, as an InputError naming `source` and `field`: one entry per base layer, each an auxiliary
// layer index.
void validate_layer_map(const std::vector<int64_t>& layer_map, int64_t base_layers, int64_t auxiliary_layers,
                        const std::string& source, const std::string& field);

// Records each layer's pre-RoPE keys and values while a model reads one step; attention stays within the step.
class PreRopeRecorder : public KVCache {
 public:
  explicit PreRopeRecorder(int64_t num_layers) : keys_(num_layers), values_(num_layers) {}
  void pre_rope(int64_t layer, const at::Tensor& keys, const at::Tensor& values) override;
  CachedKV update(int64_t layer, const at::Tensor& keys, const at::Tensor& values,
                  const at::Tensor& positions) override;
  int64_t length(int64_t) const override { return 0; }  // keeps nothing between steps
  int64_t bytes() const override { return 0; }
  const at::Tensor& keys(int64_t layer) const { return keys_.at(layer); }
  const at::Tensor& values(int64_t layer) const { return values_.at(layer); }

 private:
  std::vector<at::Tensor> keys_, values_;
};

// Training's view of the base model in KV Prediction: every layer attends to the predicted keys (rotated at
// `positions` by the base's RoPE) and values instead of what it computed itself; with `own_from` ([batch] int64), only
// at positions below own_from[b], the base's own keys and values from there on, as at inference, where the base
// reads the prompt's last token and then decodes with its own cache beside the predicted prompt.
class PredictedKVCache : public KVCache {
 public:
  PredictedKVCache(const PredictedKV& predicted, const at::Tensor& inv_freq, const at::Tensor& positions,
                   const at::Tensor& own_from = at::Tensor());
  CachedKV update(int64_t layer, const at::Tensor& keys, const at::Tensor& values,
                  const at::Tensor& positions) override;
  int64_t length(int64_t layer) const override { return keys_.at(layer).size(2); }
  int64_t bytes() const override;

 private:
  std::vector<at::Tensor> keys_, values_;
  at::Tensor positions_;
  at::Tensor own_;  // [batch, 1, tokens, 1] bool: the base's own KV here; undefined = predicted everywhere
};

// Fills `cache` by prediction and returns the first token's logits [batch, 1, vocab]: the auxiliary reads every
// prompt token but the last, the predictions (rotated at their positions) go into the cache, and the base reads the
// last. ids/positions: [batch, tokens], left padded as generate() lays prompts out.
at::Tensor predicted_prefill(Transformer& base, KvPredictor& predictor, const at::Tensor& ids,
                             const at::Tensor& positions, KVCache& cache);

}  // namespace kvforge
