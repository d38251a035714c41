#include "trainers/rlkv/grpo.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <numeric>

#include "runtime/generate.h"
#include "trainers/task_batches.h"

namespace kvforge::rlkv {
namespace {

// One micro-batch's rollouts, logged with its loss (the artifact's reward summary reads them from the step records).
struct RolloutStats {
  double mean_reward = 0;
  double penalty_scale = 0;
  double completion_tokens = 0;  // mean per rollout
  double rollout_seconds = 0;
  double rollout_tokens_per_second = 0;
};

}  // namespace

std::vector<double> grpo_advantages(const std::vector<double>& rewards, int64_t group_size, bool batch) {
  const auto count = static_cast<int64_t>(rewards.size());
  const int64_t width = batch ? count : group_size;
  std::vector<double> advantages(rewards.size(), 0.0);
  for (int64_t start = 0; start < count; start += width) {
    const int64_t end = std::min(count, start + width);
    double mean = 0, square = 0;
    for (int64_t i = start; i < end; ++i) mean += rewards[i];
    mean /= static_cast<double>(end - start);
    for (int64_t i = start; i < end; ++i) square += (rewards[i] - mean) * (rewards[i] - mean);
    const double spread = std::sqrt(square / static_cast<double>(end - start));
    if (spread < 1e-9) continue;
    for (int64_t i = start; i < end; ++i) advantages[i] = (rewards[i] - mean) / spread;
  }
  return advantages;
}

GrpoObjective::GrpoObjective(Transformer model, const Tokenizer& tokenizer, std::vector<int64_t> eos_token_ids,
                             HeadGates& gates, ProblemSource problems, GrpoConfig config)
    : model_(std::move(model)),
      tokenizer_(tokenizer),
      eos_token_ids_(std::move(eos_token_ids)),
      gates_(gates),
      problems_(std::move(problems)),
      config_(config) {}

MicroBatchLoss GrpoObjective::micro_batch_loss(int64_t step, int64_t micro_batch) {
  const at::Device device = model_->output_weight().device();
  gates_.refresh();
  model_->set_head_mixing(&gates_.mixing);

  // Rollouts: every problem G times, sampled under the current gates.
  const std::vector<Problem> problems = problems_(step, micro_batch, config_.prompts);
  std::vector<std::vector<int64_t>> prompts;
  for (const Problem& problem : problems) {
    const std::vector<int64_t> ids = tokenizer_.encode(problem.prompt, true);
    for (int64_t g = 0; g < config_.group_size; ++g) prompts.push_back(ids);
  }
  GenerationOptions generation;
  generation.max_new_tokens = config_.max_new_tokens;
  generation.sampling.temperature = config_.temperature;
  generation.sampling.seed =
      mix_seed({config_.seed, static_cast<uint64_t>(step), static_cast<uint64_t>(micro_batch), /*rollouts=*/1});
  generation.eos_token_ids = eos_token_ids_;
  const auto started = std::chrono::steady_clock::now();
  const GenerationResult rollouts = generate(model_, prompts, generation, &tokenizer_);
  RolloutStats stats;
  stats.rollout_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  std::vector<double> rewards;
  int64_t generated = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<int64_t>& tokens = rollouts.sequences[i].tokens;
    rewards.push_back(problems[i / config_.group_size].reward(tokenizer_.decode(tokens, true)));
    generated += static_cast<int64_t>(tokens.size());
  }
  stats.mean_reward = std::accumulate(rewards.begin(), rewards.end(), 0.0) / static_cast<double>(rewards.size());
  stats.completion_tokens = static_cast<double>(generated) / static_cast<double>(rewards.size());
  stats.rollout_tokens_per_second = static_cast<double>(generated) / std::max(stats.rollout_seconds, 1e-9);
  const std::vector<double> advantages = grpo_advantages(rewards, config_.group_size, config_.batch_advantages);

  // Log-probabilities of the sampled tokens under the mixed attention, with gradient to the gates: prompt and
  // completion right-padded into one batch; `scored` marks the positions that predict a completion token.
  const auto rows = static_cast<int64_t>(prompts.size());
  int64_t longest = 0;
  for (size_t i = 0; i < prompts.size(); ++i)
    longest = std::max<int64_t>(longest, prompts[i].size() + rollouts.sequences[i].tokens.size());
  at::Tensor ids = at::zeros({rows, longest}, at::kLong);
  at::Tensor scored = at::zeros({rows, longest}, at::kFloat);
  at::Tensor advantage = at::tensor(advantages, at::kDouble).to(at::kFloat).unsqueeze(1);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int64_t> sequence = prompts[r];
    const std::vector<int64_t>& completion = rollouts.sequences[r].tokens;
    sequence.insert(sequence.end(), completion.begin(), completion.end());
    ids[r].narrow(0, 0, static_cast<int64_t>(sequence.size())).copy_(at::tensor(sequence, at::kLong));
    if (!completion.empty())
      scored[r]
          .narrow(0, static_cast<int64_t>(prompts[r].size()) - 1, static_cast<int64_t>(completion.size()))
          .fill_(1);
  }
  ids = ids.to(device);
  scored = scored.to(device);
  at::Tensor positions = at::arange(longest, at::kLong).unsqueeze(0).expand({rows, longest}).to(device);
  at::Tensor logits = model_->forward(ids, positions, nullptr, /*last_only=*/false, /*causal_prefix=*/true);
  at::Tensor next = at::cat({ids.narrow(1, 1, longest - 1), at::zeros({rows, 1}, ids.options())}, 1);
  at::Tensor logp = at::log_softmax(logits.to(at::kFloat), -1).gather(2, next.unsqueeze(2)).squeeze(2);
  // On-policy with one update per batch: the ratio is 1 in value, and clipping bounds it as GRPO defines.
  at::Tensor ratio = at::exp(logp - logp.detach());
  at::Tensor adv = advantage.to(device);
  at::Tensor surrogate =
      at::minimum(ratio * adv, at::clamp(ratio, 1 - config_.clip_epsilon, 1 + config_.clip_epsilon) * adv);
  const double tokens = std::max(scored.sum().item<double>(), 1.0);
  at::Tensor policy_loss = -(surrogate * scored).sum() / tokens;
  stats.penalty_scale = penalty_scale(stats.mean_reward, config_.beta, config_.tau);
  at::Tensor loss = policy_loss + stats.penalty_scale * gates_.values.abs().mean();

  MicroBatchLoss result;
  result.loss = loss;
  result.tokens = static_cast<int64_t>(tokens);
  result.metrics = {{"reward", stats.mean_reward},
                    {"penalty_scale", stats.penalty_scale},
                    {"gate_mean", gates_.values.detach().mean().item<double>()},
                    {"completion_tokens", stats.completion_tokens},
                    {"rollout_tokens_per_s", stats.rollout_tokens_per_second},
                    {"rollout_s", stats.rollout_seconds}};
  return result;
}

}  // namespace kvforge::rlkv
