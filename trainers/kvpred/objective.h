#pragma once
// KV Prediction's training objective. The auxiliary reads the sequence, the predictors give every base layer's
// pre-RoPE keys and values, and the frozen base reads the same tokens attending causally to the prediction only (its
// own keys and values are discarded), so the base's cross-entropy trains the auxiliary and predictors through the
// frozen base (by default the base reads its own KV from the prompt's last token on, as at inference, so it trains on
// the mix it will see). loss = CE(base | predicted KV) + auxiliary_weight · CE(auxiliary) + consistency_weight ·
// consistency, where consistency is the L1 between predicted and true KV, K and V each a mean over non-padding
// positions, averaged (or summed) over layers.
#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

#include "runtime/kv_prediction.h"
#include "trainers/task_batches.h"
#include "trainers/training_loop.h"

namespace kvforge::kvpred {

// Mean absolute error of predicted against true pre-RoPE K and V (each [batch, kv_heads, tokens, head_dim]) over the
// positions >= 0 of `positions` [batch, tokens]; per layer the K and V means added, then averaged over layers or
// summed (`sum_layers`).
at::Tensor consistency_l1(const PredictedKV& predicted, const PredictedKV& truth, const at::Tensor& positions,
                          bool sum_layers);

// The base model's own pre-RoPE keys and values over a batch (no gradient): the consistency loss's target.
PredictedKV true_kv(Transformer& base, const at::Tensor& ids, const at::Tensor& positions);

struct ObjectiveConfig {
  BatchSource batches;
  uint64_t seed = 0;
  double auxiliary_weight = 1.0;
  double consistency_weight = 1.0;
  bool sum_layers = false;  // the reference's shipped configs sum; its paper found the mean better
  // true: the base reads its own KV from each row's last prompt token on (own_kv_from), as it does at inference;
  // false: the prediction everywhere (the reference's training)
  bool own_kv_after_prompt = true;
};

// Where each row's own KV starts under own_kv_after_prompt: at the last prompt token of a task batch; in a document
// window (no prompt) at a point drawn from `seed` uniformly in [1, tokens - 1]. [batch] int64.
at::Tensor own_kv_from(const TokenBatch& batch, uint64_t seed);

// Held-out means per token: the base reading its own KV (the target), the base on the prediction, the auxiliary
// alone, and the consistency L1.
struct HeldOutLosses {
  double base_ce = 0, predicted_ce = 0, auxiliary_ce = 0, consistency = 0;
};

class KvPredictionObjective : public TrainingObjective {
 public:
  KvPredictionObjective(Transformer base, KvPredictor predictor, ObjectiveConfig config);
  std::vector<at::Tensor> trainable_parameters() override;
  std::vector<std::pair<std::string, at::Tensor>> checkpoint_tensors() override;
  MicroBatchLoss micro_batch_loss(int64_t step, int64_t micro_batch) override;
  // Over `count` batches drawn with a seed of their own (never a training batch).
  HeldOutLosses held_out(int64_t count);

 private:
  struct Terms {
    at::Tensor base_ce, auxiliary_ce, consistency;
    int64_t tokens = 0;
  };
  Terms terms(const TokenBatch& batch, uint64_t split_seed);

  Transformer base_;
  KvPredictor predictor_;
  ObjectiveConfig config_;
};

}  // namespace kvforge::kvpred
