#include "trainers/task_batches.h"

#include <algorithm>
#include <numeric>

#include "runtime/input_error.h"

namespace kvforge {

uint64_t mix_seed(std::initializer_list<uint64_t> values) {
  uint64_t state = 0x9e3779b97f4a7c15ull;
  for (uint64_t value : values) {
    state ^= value + 0x9e3779b97f4a7c15ull + (state << 6) + (state >> 2);
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    state = z ^ (z >> 31);
  }
  return state;
}

void validate(const TaskMixture& mixture) {
  if (mixture.tasks.empty()) fail_input("recipe", "data.tasks", "expected at least one task");
  const auto& known = tasks::task_names();
  for (const std::string& task : mixture.tasks)
    if (std::find(known.begin(), known.end(), task) == known.end()) {
      std::string names;
      for (const auto& name : known) names += (names.empty() ? "" : ", ") + name;
      fail_input("recipe", "data.tasks", "unknown task '" + task + "'; expected one of " + names);
    }
  if (!mixture.weights.empty()) {
    if (mixture.weights.size() != mixture.tasks.size())
      fail_input("recipe", "data.weights", "expected one weight per task");
    for (double weight : mixture.weights)
      if (!(weight >= 0)) fail_input("recipe", "data.weights", "expected non-negative weights");
    if (std::accumulate(mixture.weights.begin(), mixture.weights.end(), 0.0) <= 0)
      fail_input("recipe", "data.weights", "expected a positive total");
  }
  if (mixture.min_tokens < 1 || mixture.max_tokens < mixture.min_tokens)
    fail_input("recipe", "data.min_tokens", "expected 1 <= min_tokens <= max_tokens");
}

TokenBatch make_task_batch(const TaskMixture& mixture, const Tokenizer& tokenizer, int64_t eos_id, int64_t pad_id,
                           int64_t step, int64_t micro_batch, int64_t batch_size) {
  const tasks::TokenCounter count = [&](const std::string& text) {
    return static_cast<int64_t>(tokenizer.encode(text, /*add_special_tokens=*/true).size());
  };
  std::vector<double> weights = mixture.weights;
  if (weights.empty()) weights.assign(mixture.tasks.size(), 1.0);
  const double total_weight = std::accumulate(weights.begin(), weights.end(), 0.0);

  std::vector<std::vector<int64_t>> sequences;
  std::vector<int64_t> answer_starts;  // index of the first token that belongs to the answer
  for (int64_t i = 0; i < batch_size; ++i) {
    const uint64_t seed = mix_seed({mixture.seed, static_cast<uint64_t>(step), static_cast<uint64_t>(micro_batch),
                                    static_cast<uint64_t>(i)});
    // Task by weight, length uniform in the range: both from the sample's own seed.
    double pick = static_cast<double>(seed >> 11) / static_cast<double>(1ull << 53) * total_weight;
    size_t task = 0;
    while (task + 1 < weights.size() && pick >= weights[task]) pick -= weights[task++];
    const uint64_t length_seed = mix_seed({seed, 1});
    const int64_t span = mixture.max_tokens - mixture.min_tokens + 1;
    tasks::TaskSpec spec;
    spec.task = mixture.tasks[task];
    spec.target_tokens = mixture.min_tokens + static_cast<int64_t>(length_seed % static_cast<uint64_t>(span));
    spec.seed = mix_seed({seed, 2});
    spec.count = 1;
    spec.arithmetic_steps = mixture.arithmetic_steps;
    spec.grow_to_minimum = true;
    tasks::Sample sample = tasks::generate(spec, count).front();
    std::vector<int64_t> ids = tokenizer.encode(sample.prompt, /*add_special_tokens=*/true);
    answer_starts.push_back(static_cast<int64_t>(ids.size()));
    std::vector<int64_t> answer = tokenizer.encode(sample.target, /*add_special_tokens=*/false);
    ids.insert(ids.end(), answer.begin(), answer.end());
    ids.push_back(eos_id);
    sequences.push_back(std::move(ids));
  }
  int64_t longest = 0;
  for (const auto& sequence : sequences) longest = std::max<int64_t>(longest, sequence.size() - 1);
  TokenBatch batch;
  batch.input_ids = at::full({batch_size, longest}, pad_id, at::kLong);
  batch.positions = at::full({batch_size, longest}, -1, at::kLong);
  batch.labels = at::full({batch_size, longest}, -100, at::kLong);
  auto ids_at = batch.input_ids.accessor<int64_t, 2>();
  auto positions_at = batch.positions.accessor<int64_t, 2>();
  auto labels_at = batch.labels.accessor<int64_t, 2>();
  batch.prompt_tokens = at::tensor(answer_starts, at::kLong);
  for (int64_t b = 0; b < batch_size; ++b) {
    const auto& sequence = sequences[b];
    for (int64_t t = 0; t + 1 < static_cast<int64_t>(sequence.size()); ++t) {
      ids_at[b][t] = sequence[t];
      positions_at[b][t] = t;
      // Token t predicts token t + 1; without prompt loss only answer tokens (and EOS) count.
      if (mixture.loss_on_prompt || t + 1 >= answer_starts[b]) {
        labels_at[b][t] = sequence[t + 1];
        ++batch.loss_tokens;
      }
    }
  }
  return batch;
}

at::Tensor next_token_loss(const at::Tensor& logits, const at::Tensor& labels) {
  const int64_t vocab = logits.size(-1);
  return at::cross_entropy_loss(logits.reshape({-1, vocab}).to(at::kFloat), labels.reshape({-1}).to(logits.device()),
                                /*weight=*/{}, at::Reduction::Mean, /*ignore_index=*/-100);
}

}  // namespace kvforge
