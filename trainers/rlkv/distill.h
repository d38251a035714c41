#pragma once
// DuoAttention's objective, as RLKV's alternative: two streams over the same retrieval batch. The teacher
// (the frozen model, full attention) runs first and records every layer's attention output; the student
// mixes, per KV head, α·(the teacher's output at that layer) + (1−α)·(its own streaming attention), and the
// loss is the squared distance of the final-norm hidden states on the answer tokens plus λ·mean|α|.
#include <string>
#include <vector>

#include "runtime/tokenizer.h"
#include "runtime/transformer.h"
#include "trainers/rlkv/head_gates.h"
#include "trainers/task_batches.h"
#include "trainers/training_loop.h"

namespace kvforge::rlkv {

struct DistillConfig {
  TaskMixture data;  // retrieval tasks whose answers are supervised (loss_on_prompt false)
  int64_t batch_size = 4;
  double l1 = 0.05;  // DuoAttention's weight on mean|α|
};

class DistillObjective : public TrainingObjective {
 public:
  // `eos_id` ends every answer (and pads the batch; padding never carries a label).
  DistillObjective(Transformer model, const Tokenizer& tokenizer, int64_t eos_id, HeadGates& gates,
                   DistillConfig config);

  std::vector<at::Tensor> trainable_parameters() override { return {gates_.values}; }
  std::vector<std::pair<std::string, at::Tensor>> checkpoint_tensors() override { return {{"gates", gates_.values}}; }
  MicroBatchLoss micro_batch_loss(int64_t step, int64_t micro_batch) override;
  void after_step(int64_t) override { gates_.clamp(); }

 private:
  Transformer model_;
  const Tokenizer& tokenizer_;
  int64_t eos_id_;
  HeadGates& gates_;
  DistillConfig config_;
};

}  // namespace kvforge::rlkv
