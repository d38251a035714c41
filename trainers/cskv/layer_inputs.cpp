#include "trainers/cskv/layer_inputs.h"

#include <torch/torch.h>

#include "runtime/generate.h"

namespace kvforge::cskv {
namespace {

// A full cache that keeps the attention input of every layer of the last forward pass.
class InputRecorder : public KVCache {
 public:
  InputRecorder(std::unique_ptr<KVCache> inner, int64_t layers) : inner_(std::move(inner)), inputs_(layers) {}
  void attention_input(int64_t layer, const at::Tensor& hidden) override { inputs_[layer] = hidden; }
  CachedKV update(int64_t layer, const at::Tensor& keys, const at::Tensor& values,
                  const at::Tensor& positions) override {
    return inner_->update(layer, keys, values, positions);
  }
  int64_t length(int64_t layer) const override { return inner_->length(layer); }
  int64_t bytes() const override { return inner_->bytes(); }
  std::vector<at::Tensor> take() { return std::move(inputs_); }

 private:
  std::unique_ptr<KVCache> inner_;
  std::vector<at::Tensor> inputs_;
};

}  // namespace

std::vector<at::Tensor> attention_inputs(Transformer& model, const at::Tensor& ids, const at::Tensor& positions) {
  torch::NoGradGuard no_grad;
  InputRecorder recorder(make_full_cache(model, ids.size(0), ids.size(1)), model->config.num_layers);
  model->forward(ids, positions, &recorder, /*last_only=*/true);
  return recorder.take();
}

InputStatistics input_statistics(Transformer& model, const std::function<TokenBatch(int64_t)>& batch, int64_t batches,
                                 bool second_moment) {
  const at::Device device = model->output_weight().device();
  const int64_t layers = model->config.num_layers, hidden = model->config.hidden_size;
  const at::TensorOptions options = at::TensorOptions().dtype(at::kDouble).device(device);
  InputStatistics statistics;
  for (int64_t l = 0; l < layers; ++l) {
    statistics.mean_abs.push_back(at::zeros({hidden}, options));
    if (second_moment) statistics.second_moment.push_back(at::zeros({hidden, hidden}, options));
  }
  for (int64_t i = 0; i < batches; ++i) {
    const TokenBatch tokens = batch(i);
    const at::Tensor positions = tokens.positions.to(device);
    const at::Tensor valid = (positions >= 0).reshape({-1});
    const std::vector<at::Tensor> inputs = attention_inputs(model, tokens.input_ids.to(device), positions);
    for (int64_t l = 0; l < layers; ++l) {
      const at::Tensor x = inputs[l].reshape({-1, hidden}).index({valid}).to(at::kDouble);
      statistics.mean_abs[l] += x.abs().sum(0);
      if (second_moment) statistics.second_moment[l] += at::mm(x.t(), x);
    }
    statistics.tokens += valid.sum().item<int64_t>();
  }
  const double count = static_cast<double>(std::max<int64_t>(statistics.tokens, 1));
  for (int64_t l = 0; l < layers; ++l) {
    statistics.mean_abs[l] /= count;
    if (second_moment) statistics.second_moment[l] /= count;
  }
  return statistics;
}

}  // namespace kvforge::cskv
