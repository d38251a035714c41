// Scoring as RULER's string_match_all / string_match_part, plus an exact final-answer check for
// verifiable rewards.
#include <algorithm>
#include <cctype>

#include "eval/tasks/task.h"

namespace kvforge::tasks {
namespace {

std::string lowercase(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

}  // namespace

std::optional<std::string> extract_final_answer(const std::string& completion) {
  static const std::string kPrefix = "Answer:";
  const size_t at = completion.rfind(kPrefix);
  if (at == std::string::npos) return std::nullopt;
  size_t begin = at + kPrefix.size();
  size_t end = completion.find('\n', begin);
  if (end == std::string::npos) end = completion.size();
  while (begin < end && is_space(completion[begin])) ++begin;
  while (end > begin && is_space(completion[end - 1])) --end;
  return completion.substr(begin, end - begin);
}

double score(const Sample& sample, const std::string& completion) {
  // A sample without answers cannot be answered right; 0 keeps such a defect visible in the mean.
  if (sample.answers.empty()) return 0.0;
  switch (sample.rule) {
    case ScoringRule::kAllContained:
    case ScoringRule::kAnyContained: {
      const std::string haystack = lowercase(completion);
      int64_t hits = 0;
      for (const auto& answer : sample.answers) hits += haystack.find(lowercase(answer)) != std::string::npos;
      if (sample.rule == ScoringRule::kAnyContained) return hits > 0 ? 1.0 : 0.0;
      return static_cast<double>(hits) / static_cast<double>(sample.answers.size());
    }
    case ScoringRule::kFinalAnswer: {
      const std::optional<std::string> answer = extract_final_answer(completion);
      return answer && *answer == sample.answers[0] ? 1.0 : 0.0;
    }
  }
  return 0.0;  // not reached: the switch covers every rule, and a new rule is a compiler warning there
}

}  // namespace kvforge::tasks
