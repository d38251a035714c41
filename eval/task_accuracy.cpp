#include "eval/task_accuracy.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "eval/harness.h"
#include "eval/tasks/task.h"
#include "eval/tasks/tokenized_samples.h"
#include "runtime/input_error.h"

namespace kvforge {
void validate_task_accuracy_options(const TaskAccuracyOptions& options, const Tokenizer& tokenizer) {
  if (!options.tasks.empty() && (options.lengths.empty() || options.samples < 1))
    fail_input("recipe", "eval", "expected eval.lengths and eval.samples >= 1 when eval.tasks is set");
  for (const std::string& task : options.tasks) {
    for (int64_t length : options.lengths) {
      try {
        tasks::draw_samples(tokenizer, task, length, 1, options.seed, options.arithmetic_steps);
      } catch (const std::invalid_argument& error) {
        fail_input("recipe", "eval.tasks/eval.lengths", error.what());
      }
    }
  }
}

std::vector<TaskAccuracy> evaluate_task_accuracy(Transformer& model, const Tokenizer& tokenizer,
                                                 const TaskAccuracyOptions& options) {
  std::vector<TaskAccuracy> results;
  for (const std::string& task : options.tasks) {
    for (int64_t length : options.lengths) {
      const eval::EncodedSamples samples = eval::encode_samples(
          tokenizer,
          tasks::draw_samples(tokenizer, task, length, options.samples, options.seed, options.arithmetic_steps));
      const eval::CellResult cell =
          eval::evaluate_cell(model, tokenizer, options.eos_token_ids, samples, /*policy=*/nullptr, options.batch_size);
      results.push_back({task, length, cell.samples, cell.accuracy});
    }
  }
  return results;
}

std::string accuracy_table(const std::vector<TaskAccuracy>& results) {
  std::vector<std::string> tasks;
  std::set<int64_t> lengths;
  std::map<std::pair<std::string, int64_t>, const TaskAccuracy*> cells;
  for (const TaskAccuracy& result : results) {
    if (std::find(tasks.begin(), tasks.end(), result.task) == tasks.end()) tasks.push_back(result.task);
    lengths.insert(result.length);
    cells[{result.task, result.length}] = &result;
  }
  std::string table = "| task |";
  for (int64_t length : lengths) table += " " + std::to_string(length) + " tokens |";
  table += "\n|---|";
  for (size_t i = 0; i < lengths.size(); ++i) table += "---|";
  table += "\n";
  for (const std::string& task : tasks) {
    table += "| " + task + " |";
    for (int64_t length : lengths) {
      auto cell = cells.find({task, length});
      char text[64] = " - ";
      if (cell != cells.end())
        std::snprintf(text, sizeof(text), " %.1f%% (n=%lld) ", 100.0 * cell->second->accuracy,
                      static_cast<long long>(cell->second->samples));
      table += std::string(text) + "|";
    }
    table += "\n";
  }
  return table;
}

}  // namespace kvforge
