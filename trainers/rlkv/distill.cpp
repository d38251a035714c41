#include "trainers/rlkv/distill.h"

#include <torch/torch.h>

namespace kvforge::rlkv {

DistillObjective::DistillObjective(Transformer model, const Tokenizer& tokenizer, int64_t eos_id, HeadGates& gates,
                                   DistillConfig config)
    : model_(std::move(model)), tokenizer_(tokenizer), eos_id_(eos_id), gates_(gates), config_(std::move(config)) {}

MicroBatchLoss DistillObjective::micro_batch_loss(int64_t step, int64_t micro_batch) {
  const at::Device device = model_->output_weight().device();
  const TokenBatch batch =
      make_task_batch(config_.data, tokenizer_, eos_id_, eos_id_, step, micro_batch, config_.batch_size);
  const at::Tensor ids = batch.input_ids.to(device), positions = batch.positions.to(device);
  const at::Tensor labels = (batch.labels != -100).to(at::kFloat).to(device);  // positions predicting the answer

  // Teacher: the base model, each layer's full-attention output recorded.
  gates_.mixing.recording = true;
  gates_.mixing.teacher_outputs.clear();
  model_->set_head_mixing(&gates_.mixing);
  at::Tensor teacher;
  {
    torch::NoGradGuard no_grad;
    teacher = model_->hidden_states(ids, positions, nullptr, /*causal_prefix=*/true).to(at::kFloat);
  }
  // Student: the teacher's outputs as the full term, its own streaming attention beside them.
  gates_.mixing.recording = false;
  gates_.mixing.teacher_outputs = gates_.mixing.recorded;
  gates_.refresh();
  at::Tensor student = model_->hidden_states(ids, positions, nullptr, /*causal_prefix=*/true).to(at::kFloat);
  gates_.mixing.teacher_outputs.clear();
  gates_.mixing.recorded.clear();

  const double tokens = std::max(labels.sum().item<double>(), 1.0);
  at::Tensor distance = (teacher - student).pow(2).mean(-1);  // [rows, longest]
  at::Tensor distill = (distance * labels).sum() / tokens;
  at::Tensor loss = distill + config_.l1 * gates_.values.abs().mean();
  MicroBatchLoss result;
  result.loss = loss;
  result.tokens = static_cast<int64_t>(tokens);
  result.metrics = {{"distill", distill.item<double>()}, {"gate_mean", gates_.values.detach().mean().item<double>()}};
  return result;
}

}  // namespace kvforge::rlkv
