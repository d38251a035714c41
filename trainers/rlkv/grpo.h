#pragma once
// RLKV's objective: GRPO over rollouts the runtime samples under the current mixed-head attention, with
// verifiable rewards, a clipped surrogate and no KL, plus the reward-gated L1 penalty that pushes gates to 0
// once the policy solves the task. Only the gates train.
#include <vector>

#include "runtime/tokenizer.h"
#include "runtime/transformer.h"
#include "trainers/rlkv/head_gates.h"
#include "trainers/rlkv/problems.h"
#include "trainers/training_loop.h"

namespace kvforge::rlkv {

struct GrpoConfig {
  int64_t prompts = 32;          // problems per micro-batch
  int64_t group_size = 4;        // rollouts per problem (G)
  int64_t max_new_tokens = 256;  // the paper samples up to 7168
  double temperature = 1.0;
  double clip_epsilon = 0.4;      // the paper's ε
  double beta = 1e-3;             // L1 weight scale (2.5e-3 for Qwen3 in the paper)
  double tau = 0.5;               // reward threshold for the penalty (0.55 for Qwen2.5)
  bool batch_advantages = false;  // normalise advantages over the batch (the paper's shipped config) not the group
  uint64_t seed = 0;
};

// Group-normalised advantages: (r − mean) / std within each consecutive group of `group_size` rewards (or over
// all when `batch`); 0 where the std is 0 (every rollout equally right or wrong carries no signal).
std::vector<double> grpo_advantages(const std::vector<double>& rewards, int64_t group_size, bool batch);

class GrpoObjective : public TrainingObjective {
 public:
  GrpoObjective(Transformer model, const Tokenizer& tokenizer, std::vector<int64_t> eos_token_ids, HeadGates& gates,
                ProblemSource problems, GrpoConfig config);

  std::vector<at::Tensor> trainable_parameters() override { return {gates_.values}; }
  std::vector<std::pair<std::string, at::Tensor>> checkpoint_tensors() override { return {{"gates", gates_.values}}; }
  MicroBatchLoss micro_batch_loss(int64_t step, int64_t micro_batch) override;
  void after_step(int64_t) override { gates_.clamp(); }

 private:
  Transformer model_;
  const Tokenizer& tokenizer_;
  std::vector<int64_t> eos_token_ids_;
  HeadGates& gates_;
  ProblemSource problems_;
  GrpoConfig config_;
};

}  // namespace kvforge::rlkv
