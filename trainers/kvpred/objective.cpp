#include "trainers/kvpred/objective.h"

#include <torch/utils.h>

namespace kvforge::kvpred {

at::Tensor consistency_l1(const PredictedKV& predicted, const PredictedKV& truth, const at::Tensor& positions,
                          bool sum_layers) {
  const at::Tensor valid = (positions >= 0).unsqueeze(1).unsqueeze(3);  // [batch, 1, tokens, 1]
  at::Tensor total;
  for (size_t l = 0; l < predicted.keys.size(); ++l) {
    for (auto [guess, target] :
         {std::pair{&predicted.keys[l], &truth.keys[l]}, std::pair{&predicted.values[l], &truth.values[l]}}) {
      const at::Tensor error = (guess->to(at::kFloat) - target->to(at::kFloat)).abs() * valid;
      const double elements = static_cast<double>(valid.sum().item<int64_t>() * target->size(1) * target->size(3));
      const at::Tensor mean = error.sum() / std::max(elements, 1.0);
      total = total.defined() ? total + mean : mean;
    }
  }
  return sum_layers ? total : total / static_cast<double>(predicted.keys.size());
}

PredictedKV true_kv(Transformer& base, const at::Tensor& ids, const at::Tensor& positions) {
  torch::NoGradGuard no_grad;
  PreRopeRecorder recorder(base->config.num_layers);
  base->hidden_states(ids, positions, &recorder, /*causal_prefix=*/true);
  PredictedKV truth;
  for (int64_t l = 0; l < base->config.num_layers; ++l) {
    truth.keys.push_back(recorder.keys(l));
    truth.values.push_back(recorder.values(l));
  }
  return truth;
}

at::Tensor own_kv_from(const TokenBatch& batch, uint64_t seed) {
  if (batch.prompt_tokens.defined()) return (batch.prompt_tokens - 1).clamp_min(0);
  const int64_t rows = batch.input_ids.size(0), tokens = batch.input_ids.size(1);
  std::vector<int64_t> from(rows, 0);
  for (int64_t b = 0; b < rows; ++b)
    if (tokens > 1) from[b] = 1 + static_cast<int64_t>(mix_seed({seed, static_cast<uint64_t>(b)}) % (tokens - 1));
  return at::tensor(from, at::kLong);
}

KvPredictionObjective::KvPredictionObjective(Transformer base, KvPredictor predictor, ObjectiveConfig config)
    : base_(std::move(base)), predictor_(std::move(predictor)), config_(std::move(config)) {}

std::vector<at::Tensor> KvPredictionObjective::trainable_parameters() { return predictor_->parameters(); }

std::vector<std::pair<std::string, at::Tensor>> KvPredictionObjective::checkpoint_tensors() {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& item : predictor_->named_parameters()) tensors.emplace_back(item.key(), item.value());
  return tensors;
}

KvPredictionObjective::Terms KvPredictionObjective::terms(const TokenBatch& batch, uint64_t split_seed) {
  const at::Device device = base_->output_weight().device();
  const at::Tensor ids = batch.input_ids.to(device), positions = batch.positions.to(device);
  const PredictedKV truth = true_kv(base_, ids, positions);
  at::Tensor auxiliary_logits;
  const PredictedKV predicted = predictor_->predict(ids, positions, /*causal_prefix=*/true, &auxiliary_logits);
  PredictedKVCache cache(predicted, base_->inv_freq, positions,
                         config_.own_kv_after_prompt ? own_kv_from(batch, split_seed) : at::Tensor());
  const at::Tensor base_logits = base_->forward(ids, positions, &cache, /*last_only=*/false, /*causal_prefix=*/true);
  Terms terms;
  terms.base_ce = next_token_loss(base_logits, batch.labels);
  terms.auxiliary_ce = next_token_loss(auxiliary_logits, batch.labels);
  terms.consistency = consistency_l1(predicted, truth, positions, config_.sum_layers);
  terms.tokens = batch.loss_tokens;
  return terms;
}

MicroBatchLoss KvPredictionObjective::micro_batch_loss(int64_t step, int64_t micro_batch) {
  const Terms t =
      terms(config_.batches(config_.seed, step, micro_batch),
            mix_seed({config_.seed, static_cast<uint64_t>(step), static_cast<uint64_t>(micro_batch), 0x5b}));
  MicroBatchLoss result;
  result.loss = t.base_ce + config_.auxiliary_weight * t.auxiliary_ce + config_.consistency_weight * t.consistency;
  result.tokens = t.tokens;
  const at::Tensor logged = at::stack({t.base_ce.detach(), t.auxiliary_ce.detach(), t.consistency.detach()})
                                .to(at::kCPU, at::kDouble);  // one device sync for the three
  result.metrics = {{"base_ce", logged[0].item<double>()},
                    {"auxiliary_ce", logged[1].item<double>()},
                    {"consistency_l1", logged[2].item<double>()}};
  return result;
}

HeldOutLosses KvPredictionObjective::held_out(int64_t count) {
  torch::NoGradGuard no_grad;
  const uint64_t seed = mix_seed({config_.seed, 0xe7a1});
  const at::Device device = base_->output_weight().device();
  HeldOutLosses losses;
  for (int64_t i = 0; i < count; ++i) {
    const TokenBatch batch = config_.batches(seed, i, 0);
    const Terms t = terms(batch, mix_seed({seed, static_cast<uint64_t>(i), 0x5b}));
    const at::Tensor own = base_->forward(batch.input_ids.to(device), batch.positions.to(device), nullptr,
                                          /*last_only=*/false, /*causal_prefix=*/true);
    losses.base_ce += next_token_loss(own, batch.labels).item<double>() / static_cast<double>(count);
    losses.predicted_ce += t.base_ce.item<double>() / static_cast<double>(count);
    losses.auxiliary_ce += t.auxiliary_ce.item<double>() / static_cast<double>(count);
    losses.consistency += t.consistency.item<double>() / static_cast<double>(count);
  }
  return losses;
}

}  // namespace kvforge::kvpred
