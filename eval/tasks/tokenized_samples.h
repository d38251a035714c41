#pragma once
// Task samples sized in a model's tokens: the tokenizer counts, the generators fit their prompts to the count.
// Torch-free, shared by the harness, the trainers' task data and RLKV's problems.
#include <cstdint>
#include <string>
#include <vector>

#include "eval/tasks/task.h"
#include "runtime/tokenizer.h"

namespace kvforge::tasks {

// Counts a text's tokens as the model reads it (with the tokenizer's template, e.g. BOS).
TokenCounter token_counter(const Tokenizer& tokenizer);

// `count` samples of a task at a prompt length in the tokenizer's tokens (tasks::generate's errors pass through).
std::vector<Sample> draw_samples(const Tokenizer& tokenizer, const std::string& task, int64_t length, int64_t count,
                                 uint64_t seed, int64_t arithmetic_steps);

}  // namespace kvforge::tasks
