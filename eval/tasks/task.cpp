// The task table, spec validation and the per-sample seeding shared by every generator.
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "eval/tasks/generators.h"
#include "eval/tasks/word_lists.h"

namespace kvforge::tasks {
namespace {

struct TaskEntry {
  const char* name;
  Generator make;
};

// The one registration point: a new task is a generator in its own file plus a row here.
const std::vector<TaskEntry>& task_table() {
  static const std::vector<TaskEntry> kTable = {
      {"passkey", make_passkey},
      {"niah_single", make_niah_single},
      {"niah_multikey", make_niah_multikey},
      {"niah_multivalue", make_niah_multivalue},
      {"niah_multiquery", make_niah_multiquery},
      {"variable_tracking", make_variable_tracking},
      {"kv_retrieval", make_kv_retrieval},
      {"arithmetic", make_arithmetic},
  };
  return kTable;
}

// Bounds that keep every generator's loops short and its numbers inside int64.
constexpr int64_t kMaxTargetTokens = int64_t{1} << 40;
constexpr int64_t kMaxPasskeyDigits = 18;
constexpr int64_t kMaxVariables = 10000;
constexpr int64_t kMaxArithmeticSteps = 64;

void require(bool ok, const std::string& field, const std::string& expectation) {
  if (!ok) throw std::invalid_argument("TaskSpec." + field + ": expected " + expectation);
}

void validate(const TaskSpec& spec) {
  require(spec.count >= 0, "count", ">= 0");
  require(spec.target_tokens >= 0 && spec.target_tokens <= kMaxTargetTokens, "target_tokens",
          "in [0, " + std::to_string(kMaxTargetTokens) + "]");
  require(spec.depth == -1 || (spec.depth >= 0 && spec.depth <= 1), "depth",
          "-1 (random from the grid) or a value in [0, 1]");
  require(spec.passkey_digits >= 1 && spec.passkey_digits <= kMaxPasskeyDigits, "passkey_digits",
          "in [1, " + std::to_string(kMaxPasskeyDigits) + "]");
  const std::string key_range = "in [1, " + std::to_string(kMaxWordKeys) + "]";
  require(spec.num_needles >= 1 && spec.num_needles <= kMaxWordKeys, "num_needles", key_range);
  require(spec.num_values >= 1 && spec.num_values <= kMaxWordKeys, "num_values", key_range);
  require(spec.num_queries >= 1 && spec.num_queries <= kMaxWordKeys, "num_queries", key_range);
  require(spec.num_chains >= 1 && spec.num_hops >= 0 && spec.num_chains * (spec.num_hops + 1) <= kMaxVariables,
          "num_chains/num_hops",
          "num_chains >= 1, num_hops >= 0 and num_chains * (num_hops + 1) <= " + std::to_string(kMaxVariables));
  require(spec.arithmetic_steps >= 1 && spec.arithmetic_steps <= kMaxArithmeticSteps, "arithmetic_steps",
          "in [1, " + std::to_string(kMaxArithmeticSteps) + "]");
}

}  // namespace

const std::vector<std::string>& task_names() {
  static const std::vector<std::string> kNames = [] {
    std::vector<std::string> names;
    for (const auto& entry : task_table()) names.push_back(entry.name);
    return names;
  }();
  return kNames;
}

std::vector<Sample> generate(const TaskSpec& spec, const TokenCounter& count_tokens) {
  Generator make = nullptr;
  for (const auto& entry : task_table())
    if (spec.task == entry.name) make = entry.make;
  if (make == nullptr) {
    std::string valid;
    for (const auto& name : task_names()) valid += (valid.empty() ? "" : ", ") + name;
    throw std::invalid_argument("unknown task '" + spec.task + "'; valid tasks: " + valid);
  }
  validate(spec);
  if (!count_tokens) throw std::invalid_argument("generate: the token counter is empty");

  std::vector<Sample> samples;
  samples.reserve(static_cast<size_t>(spec.count));
  for (int64_t index = 0; index < spec.count; ++index) {
    Rng rng(sample_seed(spec.task, spec.target_tokens, spec.seed, index));
    samples.push_back(make(spec, rng, count_tokens));
  }
  return samples;
}

}  // namespace kvforge::tasks
