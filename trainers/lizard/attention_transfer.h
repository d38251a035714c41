#pragma once
// Lizard's stage 1, attention transfer: the frozen model reads training text with its attention linearized and the
// teacher's softmax beside it in every layer; the loss is the mean over layers of the MSE between the student's and
// the teacher's attention outputs before o_proj (real tokens only), and the teacher's output feeds the next layer.
// Only the feature maps, gates and sink logits (or LoLCATs' window weights) learn.
#include <string>
#include <utility>
#include <vector>

#include "runtime/linearized_attention.h"
#include "runtime/transformer.h"
#include "trainers/task_batches.h"
#include "trainers/training_loop.h"

namespace kvforge::lizard {

class AttentionTransferObjective : public TrainingObjective {
 public:
  // `linearization` must outlive the objective; it is attached to the model only while a loss is computed.
  AttentionTransferObjective(Transformer model, Linearization& linearization, BatchSource batches, uint64_t seed);
  std::vector<at::Tensor> trainable_parameters() override;
  std::vector<std::pair<std::string, at::Tensor>> checkpoint_tensors() override;
  MicroBatchLoss micro_batch_loss(int64_t step, int64_t micro_batch) override;
  // The mean per-layer MSE over `count` batches drawn with a seed of their own.
  double held_out(int64_t count);

 private:
  at::Tensor transfer_loss(const TokenBatch& batch);

  Transformer model_;
  Linearization& linearization_;
  BatchSource batches_;
  uint64_t seed_;
};

}  // namespace kvforge::lizard
