// Multi-step integer arithmetic with a checkable final line, the verifiable reward for RL. The expression
// is fully parenthesised, so its meaning needs no precedence rules; every intermediate result is a
// non-negative integer <= kMaxIntermediate and division is always exact.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "eval/tasks/generators.h"
#include "eval/tasks/haystack.h"

namespace kvforge::tasks {
namespace {

constexpr int64_t kMaxIntermediate = 999;
constexpr int64_t kMaxAddend = 20;  // also the largest first operand
constexpr int64_t kMaxFactor = 9;
constexpr int64_t kMaxDivisor = 12;

std::vector<int64_t> exact_divisors(int64_t value) {
  std::vector<int64_t> divisors;
  if (value <= 0) return divisors;
  for (int64_t d = 2; d <= kMaxDivisor; ++d)
    if (value % d == 0) divisors.push_back(d);
  return divisors;
}

struct Problem {
  std::string expression;
  std::string reasoning;  // one "a op b = c." per step, in evaluation order
  int64_t result = 0;
};

Problem random_problem(Rng& rng, int64_t steps) {
  Problem problem;
  int64_t value = rng.uniform_int(1, kMaxAddend);
  problem.expression = std::to_string(value);
  for (int64_t step = 0; step < steps; ++step) {
    std::vector<char> ops;
    if (value < kMaxIntermediate) ops.push_back('+');
    if (value >= 1) ops.push_back('-');
    if (value * 2 <= kMaxIntermediate) ops.push_back('*');
    const std::vector<int64_t> divisors = exact_divisors(value);
    if (!divisors.empty()) ops.push_back('/');
    const char op = ops[rng.uniform_int(0, static_cast<int64_t>(ops.size()) - 1)];

    int64_t operand = 0;
    int64_t result = 0;
    switch (op) {
      case '+':
        operand = rng.uniform_int(1, std::min(kMaxAddend, kMaxIntermediate - value));
        result = value + operand;
        break;
      case '-':
        operand = rng.uniform_int(1, std::min(kMaxAddend, value));
        result = value - operand;
        break;
      case '*':
        operand = rng.uniform_int(2, value == 0 ? kMaxFactor : std::min(kMaxFactor, kMaxIntermediate / value));
        result = value * operand;
        break;
      default:  // '/'
        operand = divisors[rng.uniform_int(0, static_cast<int64_t>(divisors.size()) - 1)];
        result = value / operand;
        break;
    }
    // Commutative steps sometimes put the new number first, so the model sees both shapes.
    const bool operand_first = (op == '+' || op == '*') && rng.uniform_int(0, 1) == 1;
    const std::string inner = step == 0 ? problem.expression : "(" + problem.expression + ")";
    const std::string op_text = std::string(" ") + op + " ";
    problem.expression =
        operand_first ? std::to_string(operand) + op_text + inner : inner + op_text + std::to_string(operand);
    const std::string lhs = operand_first ? std::to_string(operand) + op_text + std::to_string(value)
                                          : std::to_string(value) + op_text + std::to_string(operand);
    problem.reasoning += (step == 0 ? "" : " ") + lhs + " = " + std::to_string(result) + ".";
    value = result;
  }
  problem.result = value;
  return problem;
}

}  // namespace

Sample make_arithmetic(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens) {
  const Problem problem = random_problem(rng, spec.arithmetic_steps);
  const std::string question =
      "Compute " + problem.expression + ". Think step by step, then give the final line as 'Answer: <number>'.\n";
  // Noise before the question only when the budget has room, to test reasoning after a long context.
  auto build = [&](int64_t sentences) {
    return sentences == 0 ? question : weave_noise(sentences, {}) + "\n" + question;
  };
  FittedPrompt fitted = fit_to_length(build, count_tokens, spec.target_tokens, LengthPolicy::kPadIfRoom, spec.task);

  Sample sample;
  sample.task = spec.task;
  sample.prompt = std::move(fitted.prompt);
  sample.prompt_tokens = fitted.tokens;
  sample.target = problem.reasoning + "\nAnswer: " + std::to_string(problem.result);
  sample.answers = {std::to_string(problem.result)};
  sample.rule = ScoringRule::kFinalAnswer;
  return sample;
}

}  // namespace kvforge::tasks
