// Passkey retrieval (Mohtashami & Jaggi): one number hidden in repeated noise sentences.
#include <string>
#include <utility>

#include "eval/tasks/generators.h"
#include "eval/tasks/haystack.h"

namespace kvforge::tasks {

Sample make_passkey(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens) {
  const std::string passkey = random_number(rng, spec.passkey_digits);
  const double depth = draw_depth(spec, rng);

  const std::string intro =
      "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
      "I will quiz you about the important information there.";
  const std::string needle = "The pass key is " + passkey + ". Remember it. " + passkey + " is the pass key.";
  const std::string question = "What is the pass key? The pass key is";
  auto build = [&](int64_t sentences) {
    return intro + "\n" + weave_noise(sentences, {{slot_at_depth(depth, sentences), needle}}) + "\n" + question;
  };
  FittedPrompt fitted = fit_to_length(build, count_tokens, spec.target_tokens, haystack_policy(spec), spec.task);

  Sample sample;
  sample.task = spec.task;
  sample.prompt = std::move(fitted.prompt);
  sample.prompt_tokens = fitted.tokens;
  sample.target = " " + passkey + ".";
  sample.answers = {passkey};
  sample.rule = ScoringRule::kAllContained;
  sample.depth = depth;
  return sample;
}

}  // namespace kvforge::tasks
