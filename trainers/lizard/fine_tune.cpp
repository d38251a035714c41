#include "trainers/lizard/fine_tune.h"

#include <torch/utils.h>

namespace kvforge::lizard {

uint64_t held_out_seed(uint64_t seed) { return mix_seed({seed, 0xe7a1}); }

FineTuneObjective::FineTuneObjective(Transformer model, Linearization& linearization, BatchSource batches,
                                     uint64_t seed, bool train_linearization)
    : model_(std::move(model)),
      linearization_(linearization),
      batches_(std::move(batches)),
      seed_(seed),
      train_linearization_(train_linearization) {
  if (linearization_.config.lora.rank < 1 && !train_linearization_)
    throw std::invalid_argument("lizard stage 2: nothing to train (no adapters, linearization frozen)");
  if (train_linearization_) return;
  for (const at::Tensor& parameter : linearization_.parameters()) parameter.set_requires_grad(false);
  for (const at::Tensor& parameter : linearization_.lora_parameters()) parameter.set_requires_grad(true);
}

std::vector<at::Tensor> FineTuneObjective::trainable_parameters() {
  if (train_linearization_) return linearization_.parameters();  // the adapters are among them
  return linearization_.lora_parameters();
}

std::vector<std::pair<std::string, at::Tensor>> FineTuneObjective::checkpoint_tensors() {
  return linearization_.named_parameters();
}

at::Tensor language_model_loss(Transformer& model, Linearization* linearization, const TokenBatch& batch) {
  const at::Device device = model->output_weight().device();
  if (linearization != nullptr) linearization->attention_transfer = false;
  model->set_linearization(linearization);
  at::Tensor logits;
  try {
    logits = model->forward(batch.input_ids.to(device), batch.positions.to(device), nullptr, /*last_only=*/false,
                            /*causal_prefix=*/true);
  } catch (...) {
    model->set_linearization(nullptr);
    throw;
  }
  model->set_linearization(nullptr);
  return next_token_loss(logits, batch.labels);
}

double held_out_language_model_loss(Transformer& model, Linearization* linearization, const BatchSource& batches,
                                    uint64_t seed, int64_t count) {
  torch::NoGradGuard no_grad;
  double total = 0;
  for (int64_t i = 0; i < count; ++i)
    total += language_model_loss(model, linearization, batches(held_out_seed(seed), i, 0)).item<double>();
  return total / static_cast<double>(count);
}

MicroBatchLoss FineTuneObjective::micro_batch_loss(int64_t step, int64_t micro_batch) {
  const TokenBatch batch = batches_(seed_, step, micro_batch);
  MicroBatchLoss result;
  result.loss = language_model_loss(model_, &linearization_, batch);
  result.tokens = batch.loss_tokens;
  return result;
}

}  // namespace kvforge::lizard
