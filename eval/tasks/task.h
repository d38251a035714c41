#pragma once
// Deterministic synthetic tasks (passkey, RULER-style needle-in-a-haystack, variable tracking, key-value
// retrieval, multi-step arithmetic) for pretraining, RL rewards and evaluation. Torch-free.
//
// A sample is a pure function of (task, target_tokens, seed, index), the knobs below and the token counter:
// the generator draws from std::mt19937_64 through its own integer helper, so every platform produces the
// same bytes. Lengths are in the caller's tokens: the haystack is sized by a search over haystack units
// (noise sentences, JSON pairs) so that the prompt has at most target_tokens tokens and one more unit would
// not fit, assuming the counter does not shrink when text is added.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace kvforge::tasks {

enum class ScoringRule {
  kAllContained,  // RULER string_match_all: mean over answers of a case-insensitive substring hit
  kAnyContained,  // RULER string_match_part: max over answers of a case-insensitive substring hit
  kFinalAnswer,   // the text after the last "Answer:" (trimmed, up to the end of its line) equals answers[0]
};

struct Sample {
  std::string task;    // one of task_names()
  std::string prompt;  // everything the model reads, ending with the answer prefix
  std::string target;  // the ideal completion (teacher forcing), e.g. " 71432." or a chain of thought + "Answer: 12"
  std::vector<std::string> answers;  // what scoring looks for
  ScoringRule rule = ScoringRule::kAllContained;
  double depth = -1;          // depth in [0,1] of the (queried) needle for retrieval tasks, -1 otherwise
  int64_t prompt_tokens = 0;  // the prompt measured with the caller's token counter
};

enum class NeedleValue { kNumber /* 7 digits */, kUuid /* uuid4 text */ };

struct TaskSpec {
  std::string task;
  int64_t target_tokens = 0;  // upper bound on prompt tokens (arithmetic: pad up to it, never throw)
  uint64_t seed = 42;         // RULER's default seed
  int64_t count = 1;          // samples, with indices 0..count-1
  double depth = -1;          // queried needle depth in [0,1]; -1 draws it from a 40-point grid over [0,1]
  int64_t passkey_digits = 5;
  NeedleValue needle_value = NeedleValue::kNumber;  // niah_*
  int64_t num_needles = 4;                          // niah_multikey: needles with distinct keys, one of them queried
  int64_t num_values = 4;                           // niah_multivalue: values for the one queried key
  int64_t num_queries = 4;                          // niah_multiquery: keys queried together
  int64_t num_chains = 1;        // variable_tracking: chains; the first is queried, the others distract
  int64_t num_hops = 4;          // variable_tracking: assignments after the first, so num_hops + 1 names a chain
  int64_t arithmetic_steps = 3;  // arithmetic: binary operations in the expression
  // A target_tokens below the task's minimal prompt gives that minimal prompt instead of an error
  // (training mixtures draw lengths at random across tasks whose minimal prompts differ).
  bool grow_to_minimum = false;
};

// Tokens of a string in the caller's tokenizer. It may be expensive: generate() calls it O(log n) times per
// sample, n being the number of haystack units.
using TokenCounter = std::function<int64_t(const std::string&)>;

// Throws std::invalid_argument for an unknown task (listing the valid names), a knob out of range, or a
// target_tokens below the task's minimal prompt (stating that minimum).
std::vector<Sample> generate(const TaskSpec& spec, const TokenCounter& count_tokens);

// In [0,1] under sample.rule.
double score(const Sample& sample, const std::string& completion);

// The text after the last "Answer:" up to the end of its line, trimmed; nullopt when there is none.
std::optional<std::string> extract_final_answer(const std::string& completion);

const std::vector<std::string>& task_names();

}  // namespace kvforge::tasks
