#pragma once
// Problems with a verifiable answer for RLKV's rewards: the synthetic arithmetic chain-of-thought task (its
// exact final answer), or a JSONL file of {"prompt", "answer"} with an answer extractor (a regular expression
// whose first group is compared with the answer).
#include <functional>
#include <regex>
#include <string>
#include <vector>

#include "runtime/tokenizer.h"

namespace kvforge::rlkv {

struct Problem {
  std::string prompt;
  std::function<double(const std::string& completion)> reward;  // 1 when right, else 0
};

// `count` problems for (step, micro-batch), a pure function of them so a resumed run sees the same ones.
using ProblemSource = std::function<std::vector<Problem>(int64_t step, int64_t micro_batch, int64_t count)>;

ProblemSource synthetic_problems(const Tokenizer& tokenizer, const std::string& task, int64_t prompt_tokens,
                                 int64_t arithmetic_steps, uint64_t seed);
// InputError naming the file and line for a malformed record or an invalid pattern.
ProblemSource jsonl_problems(const std::string& path, const std::string& answer_pattern, uint64_t seed);

// The first group of `pattern` in `completion` (the last match), or "" when none.
std::string extract_answer(const std::string& completion, const std::regex& pattern);

}  // namespace kvforge::rlkv
