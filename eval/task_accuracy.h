#pragma once
// Accuracy of a model on the synthetic tasks: greedy generation on fresh samples, scored by each
// task's rule, per task and prompt length, with the sample count beside every number.
#include <string>
#include <vector>

#include "runtime/tokenizer.h"
#include "runtime/transformer.h"

namespace kvforge {

struct TaskAccuracy {
  std::string task;
  int64_t length = 0;   // target prompt length in tokens
  int64_t samples = 0;
  double accuracy = 0;  // mean score in [0, 1]
};

struct TaskAccuracyOptions {
  std::vector<std::string> tasks;
  std::vector<int64_t> lengths;
  int64_t samples = 20;
  uint64_t seed = 1234;  // keep it apart from training seeds
  int64_t batch_size = 8;
  int64_t arithmetic_steps = 2;
  std::vector<int64_t> eos_token_ids;
};

// Draws one sample per task and length, so an unknown task or a length below a task's minimal prompt
// is an InputError (naming the recipe's eval fields) before any work is spent.
void validate_task_accuracy_options(const TaskAccuracyOptions& options, const Tokenizer& tokenizer);

std::vector<TaskAccuracy> evaluate_task_accuracy(Transformer& model, const Tokenizer& tokenizer,
                                                 const TaskAccuracyOptions& options);

// A markdown table: rows = tasks, columns = lengths, cells "accuracy% (n=samples)".
std::string accuracy_table(const std::vector<TaskAccuracy>& results);

}  // namespace kvforge
