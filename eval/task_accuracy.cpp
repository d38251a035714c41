#include "eval/task_accuracy.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "eval/tasks/task.h"
#include "runtime/generate.h"
#include "runtime/input_error.h"

namespace kvforge {
namespace {

tasks::TokenCounter token_counter(const Tokenizer& tokenizer) {
  return [&tokenizer](const std::string& text) { return static_cast<int64_t>(tokenizer.encode(text, true).size()); };
}

tasks::TaskSpec spec_for(const TaskAccuracyOptions& options, const std::string& task, int64_t length, int64_t count) {
  tasks::TaskSpec spec;
  spec.task = task;
  spec.target_tokens = length;
  spec.seed = options.seed;
  spec.count = count;
  spec.arithmetic_steps = options.arithmetic_steps;
  return spec;
}

}  // namespace

void validate_task_accuracy_options(const TaskAccuracyOptions& options, const Tokenizer& tokenizer) {
  const tasks::TokenCounter count = token_counter(tokenizer);
  if (!options.tasks.empty() && (options.lengths.empty() || options.samples < 1))
    fail_input("recipe", "eval", "expected eval.lengths and eval.samples >= 1 when eval.tasks is set");
  for (const std::string& task : options.tasks) {
    for (int64_t length : options.lengths) {
      try {
        tasks::generate(spec_for(options, task, length, 1), count);
      } catch (const std::invalid_argument& error) {
        fail_input("recipe", "eval.tasks/eval.lengths", error.what());
      }
    }
  }
}

std::vector<TaskAccuracy> evaluate_task_accuracy(Transformer& model, const Tokenizer& tokenizer,
                                                 const TaskAccuracyOptions& options) {
  const tasks::TokenCounter count = token_counter(tokenizer);
  std::vector<TaskAccuracy> results;
  for (const std::string& task : options.tasks) {
    for (int64_t length : options.lengths) {
      const std::vector<tasks::Sample> samples = tasks::generate(spec_for(options, task, length, options.samples), count);
      double total = 0.0;
      for (size_t first = 0; first < samples.size(); first += options.batch_size) {
        const size_t last = std::min(samples.size(), first + static_cast<size_t>(options.batch_size));
        std::vector<std::vector<int64_t>> prompts;
        int64_t longest_answer = 0;
        for (size_t i = first; i < last; ++i) {
          prompts.push_back(tokenizer.encode(samples[i].prompt, true));
          longest_answer = std::max<int64_t>(longest_answer, tokenizer.encode(samples[i].target, false).size());
        }
        GenerationOptions generation;
        generation.max_new_tokens = longest_answer + 8;  // room to stop; greedy, so no seed is involved
        generation.eos_token_ids = options.eos_token_ids;
        GenerationResult result = generate(model, prompts, generation);
        for (size_t i = first; i < last; ++i)
          total += tasks::score(samples[i], tokenizer.decode(result.sequences[i - first].tokens, true));
      }
      results.push_back({task, length, static_cast<int64_t>(samples.size()), total / samples.size()});
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
