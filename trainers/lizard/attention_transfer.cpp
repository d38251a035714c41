#include "trainers/lizard/attention_transfer.h"

#include <torch/utils.h>

#include "trainers/lizard/fine_tune.h"

namespace kvforge::lizard {

AttentionTransferObjective::AttentionTransferObjective(Transformer model, Linearization& linearization,
                                                       BatchSource batches, uint64_t seed)
    : model_(std::move(model)), linearization_(linearization), batches_(std::move(batches)), seed_(seed) {}

std::vector<at::Tensor> AttentionTransferObjective::trainable_parameters() { return linearization_.parameters(); }

std::vector<std::pair<std::string, at::Tensor>> AttentionTransferObjective::checkpoint_tensors() {
  return linearization_.named_parameters();
}

at::Tensor AttentionTransferObjective::transfer_loss(const TokenBatch& batch) {
  const at::Device device = model_->output_weight().device();
  linearization_.attention_transfer = true;
  linearization_.transfer_loss = at::Tensor();
  model_->set_linearization(&linearization_);
  try {
    model_->hidden_states(batch.input_ids.to(device), batch.positions.to(device), nullptr, /*causal_prefix=*/true);
  } catch (...) {
    model_->set_linearization(nullptr);
    throw;
  }
  model_->set_linearization(nullptr);
  return linearization_.transfer_loss / static_cast<double>(linearization_.layers.size());
}

MicroBatchLoss AttentionTransferObjective::micro_batch_loss(int64_t step, int64_t micro_batch) {
  const TokenBatch batch = batches_(seed_, step, micro_batch);
  MicroBatchLoss result;
  result.loss = transfer_loss(batch);
  result.tokens = (batch.positions >= 0).sum().item<int64_t>();
  return result;
}

double AttentionTransferObjective::held_out(int64_t count) {
  torch::NoGradGuard no_grad;
  const uint64_t seed = held_out_seed(seed_);
  double total = 0;
  for (int64_t i = 0; i < count; ++i) total += transfer_loss(batches_(seed, i, 0)).item<double>();
  return total / static_cast<double>(count);
}

}  // namespace kvforge::lizard
