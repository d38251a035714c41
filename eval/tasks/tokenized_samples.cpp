#include "eval/tasks/tokenized_samples.h"

namespace kvforge::tasks {

TokenCounter token_counter(const Tokenizer& tokenizer) {
  return [&tokenizer](const std::string& text) { return static_cast<int64_t>(tokenizer.encode(text, true).size()); };
}

std::vector<Sample> draw_samples(const Tokenizer& tokenizer, const std::string& task, int64_t length, int64_t count,
                                 uint64_t seed, int64_t arithmetic_steps) {
  TaskSpec spec;
  spec.task = task;
  spec.target_tokens = length;
  spec.seed = seed;
  spec.count = count;
  spec.arithmetic_steps = arithmetic_steps;
  return generate(spec, token_counter(tokenizer));
}

}  // namespace kvforge::tasks
