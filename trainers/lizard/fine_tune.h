#pragma once
// Lizard's stage 2: the linearized model (stage 1's feature maps, gates and sinks) fine-tuned with the language-model
// loss through low-rank adapters on its attention projections (LoRA rank 8 on q, k, v by default), the base weights
// frozen. By option the stage-1 parameters keep training beside the adapters.
#include <string>
#include <utility>
#include <vector>

#include "runtime/linearized_attention.h"
#include "runtime/transformer.h"
#include "trainers/task_batches.h"
#include "trainers/training_loop.h"

namespace kvforge::lizard {

class FineTuneObjective : public TrainingObjective {
 public:
  // `linearization` (with adapters) must outlive the objective; it is attached only while a loss is computed.
  FineTuneObjective(Transformer model, Linearization& linearization, BatchSource batches, uint64_t seed,
                    bool train_linearization);
  std::vector<at::Tensor> trainable_parameters() override;
  std::vector<std::pair<std::string, at::Tensor>> checkpoint_tensors() override;
  MicroBatchLoss micro_batch_loss(int64_t step, int64_t micro_batch) override;

 private:
  Transformer model_;
  Linearization& linearization_;
  BatchSource batches_;
  uint64_t seed_;
  bool train_linearization_;
};

// The held-out draw both stages measure on.
uint64_t held_out_seed(uint64_t seed);

// Mean next-token cross-entropy of `model` on `batch`, with `linearization` attached (nullptr = the softmax teacher).
at::Tensor language_model_loss(Transformer& model, Linearization* linearization, const TokenBatch& batch);

// The same averaged over `count` held-out batches (held_out_seed(seed)), without gradients.
double held_out_language_model_loss(Transformer& model, Linearization* linearization, const BatchSource& batches,
                                    uint64_t seed, int64_t count);

}  // namespace kvforge::lizard
