#include "trainers/rlkv/distill.h"

#include <torch/torch.h>

#include "eval/harness.h"

namespace kvforge::rlkv {

DistillObjective::DistillObjective(Transformer model, const Tokenizer& tokenizer, HeadGates& gates,
                                   DistillConfig config)
    : model_(std::move(model)), tokenizer_(tokenizer), gates_(gates), config_(std::move(config)) {}

MicroBatchLoss DistillObjective::micro_batch_loss(int64_t step, int64_t micro_batch) {
  const at::Device device = model_->output_weight().device();
  const std::string& task = config_.tasks[static_cast<size_t>(step) % config_.tasks.size()];
  const uint64_t seed = config_.seed + 1000003ULL * static_cast<uint64_t>(step) + static_cast<uint64_t>(micro_batch);
  std::vector<std::vector<int64_t>> sequences;
  std::vector<std::pair<int64_t, int64_t>> answers;  // [first predicting position, count]
  int64_t longest = 0;
  for (const tasks::Sample& sample :
       eval::draw_samples(tokenizer_, task, config_.prompt_tokens, config_.batch_size, seed, /*arithmetic_steps=*/2)) {
    std::vector<int64_t> ids = tokenizer_.encode(sample.prompt, true);
    const std::vector<int64_t> target = tokenizer_.encode(sample.target, false);
    answers.emplace_back(static_cast<int64_t>(ids.size()) - 1, static_cast<int64_t>(target.size()));
    ids.insert(ids.end(), target.begin(), target.end());
    longest = std::max<int64_t>(longest, ids.size());
    sequences.push_back(std::move(ids));
  }
  const auto rows = static_cast<int64_t>(sequences.size());
  at::Tensor ids = at::zeros({rows, longest}, at::kLong);
  at::Tensor labels = at::zeros({rows, longest}, at::kFloat);
  for (int64_t r = 0; r < rows; ++r) {
    ids[r].narrow(0, 0, static_cast<int64_t>(sequences[r].size())).copy_(at::tensor(sequences[r], at::kLong));
    labels[r].narrow(0, answers[r].first, answers[r].second).fill_(1);
  }
  ids = ids.to(device);
  labels = labels.to(device);
  at::Tensor positions = at::arange(longest, at::kLong).unsqueeze(0).expand({rows, longest}).to(device);

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
