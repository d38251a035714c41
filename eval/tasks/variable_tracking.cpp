// RULER variable tracking: chains "VAR ABCDE = 12345." -> "VAR FGHIJ = VAR ABCDE." scattered in noise. The
// first chain is queried; the others hold different values and only distract.
#include <algorithm>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "eval/tasks/generators.h"
#include "eval/tasks/haystack.h"

namespace kvforge::tasks {
namespace {

constexpr int64_t kNameLetters = 5;
constexpr int64_t kValueDigits = 5;

std::string random_name(Rng& rng) {
  std::string name;
  for (int64_t i = 0; i < kNameLetters; ++i) name += static_cast<char>('A' + rng.uniform_int(0, 25));
  return name;
}

}  // namespace

Sample make_variable_tracking(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens) {
  const int64_t names_per_chain = spec.num_hops + 1;
  std::set<std::string> seen_names;
  std::set<std::string> seen_values;
  std::vector<std::vector<std::string>> chains(spec.num_chains);
  std::vector<std::string> values(spec.num_chains);
  for (int64_t chain = 0; chain < spec.num_chains; ++chain) {
    do values[chain] = random_number(rng, kValueDigits);
    while (!seen_values.insert(values[chain]).second);
    while (static_cast<int64_t>(chains[chain].size()) < names_per_chain) {
      std::string name = random_name(rng);
      if (seen_names.insert(name).second) chains[chain].push_back(std::move(name));
    }
  }
  // Places sorted within a chain, so every variable is assigned before it is read.
  std::vector<std::vector<int64_t>> places(spec.num_chains);
  for (auto& chain_places : places) {
    for (int64_t i = 0; i < names_per_chain; ++i) chain_places.push_back(draw_place(rng));
    std::sort(chain_places.begin(), chain_places.end());
  }

  auto build = [&](int64_t sentences) {
    std::vector<Insertion> insertions;
    for (int64_t chain = 0; chain < spec.num_chains; ++chain) {
      for (int64_t i = 0; i < names_per_chain; ++i) {
        const std::string source = i == 0 ? values[chain] : "VAR " + chains[chain][i - 1];
        insertions.push_back(
            {slot_at_place(places[chain][i], sentences), "VAR " + chains[chain][i] + " = " + source + "."});
      }
    }
    return "Memorize and track the chain(s) of variable assignment hidden in the following text.\n" +
           weave_noise(sentences, insertions) + "\nQuestion: Find all variables that are assigned the value " +
           values[0] + " in the text above. Answer: According to the chain(s) of variable assignment in the text " +
           "above, " + std::to_string(names_per_chain) + " variables are assigned the value " + values[0] +
           ", they are:";
  };
  FittedPrompt fitted = fit_to_length(build, count_tokens, spec.target_tokens, haystack_policy(spec), spec.task);

  Sample sample;
  sample.task = spec.task;
  sample.prompt = std::move(fitted.prompt);
  sample.prompt_tokens = fitted.tokens;
  sample.answers = chains[0];
  for (size_t i = 0; i < chains[0].size(); ++i) sample.target += (i == 0 ? " " : ", ") + chains[0][i];
  sample.target += ".";
  sample.rule = ScoringRule::kAllContained;
  return sample;
}

}  // namespace kvforge::tasks
