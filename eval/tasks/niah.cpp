// RULER-style needle in a haystack on the noise haystack: needles "One of the special magic {numbers} for
// {key} is: {value}." with adjective-noun keys. The first needle sits at the sample's depth (the one
// queried, or the first queried); the rest sit at random places.
#include <algorithm>
#include <numeric>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "eval/tasks/generators.h"
#include "eval/tasks/haystack.h"
#include "eval/tasks/word_lists.h"

namespace kvforge::tasks {
namespace {

constexpr int64_t kNumberDigits = 7;

struct Needle {
  std::string key;
  std::string value;
};

std::vector<std::string> distinct_values(Rng& rng, NeedleValue kind, int64_t count) {
  std::set<std::string> seen;
  std::vector<std::string> values;
  while (static_cast<int64_t>(values.size()) < count) {
    std::string value = kind == NeedleValue::kNumber ? random_number(rng, kNumberDigits) : random_uuid4(rng);
    if (seen.insert(value).second) values.push_back(std::move(value));
  }
  return values;
}

// "a", "a and b", "a, b, and c".
std::string join_keys(const std::vector<std::string>& keys) {
  if (keys.size() == 1) return keys[0];
  if (keys.size() == 2) return keys[0] + " and " + keys[1];
  std::string text;
  for (size_t i = 0; i < keys.size(); ++i) text += (i == 0 ? "" : i + 1 == keys.size() ? ", and " : ", ") + keys[i];
  return text;
}

std::string join_answers(const std::vector<std::string>& answers) {
  std::string text;
  for (size_t i = 0; i < answers.size(); ++i) text += (i == 0 ? " " : ", ") + answers[i];
  return text + ".";
}

// answers_in_text_order: list the answers as they appear in the prompt (multivalue) rather than in query
// order (multiquery, where the question fixes the order).
Sample assemble(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens, std::vector<Needle> needles,
                const std::vector<std::string>& queried_keys, const std::vector<size_t>& answer_needles,
                bool answers_in_text_order) {
  const double depth = draw_depth(spec, rng);
  std::vector<int64_t> places(needles.size());
  for (size_t i = 1; i < needles.size(); ++i) places[i] = draw_place(rng);

  const std::string kind = spec.needle_value == NeedleValue::kNumber ? "numbers" : "uuids";
  const std::string query = join_keys(queried_keys);
  const std::string intro = "Some special magic " + kind + " are hidden within the following text. Make sure to " +
                            "memorize it. I will quiz you about the " + kind + " afterwards.";
  const std::string question = "What are all the special magic " + kind + " for " + query +
                               " mentioned in the provided text? The special magic " + kind + " for " + query +
                               " mentioned in the provided text are";
  auto insertions_for = [&](int64_t sentences) {
    std::vector<Insertion> insertions;
    for (size_t i = 0; i < needles.size(); ++i) {
      const int64_t slot = i == 0 ? slot_at_depth(depth, sentences) : slot_at_place(places[i], sentences);
      insertions.push_back(
          {slot, "One of the special magic " + kind + " for " + needles[i].key + " is: " + needles[i].value + "."});
    }
    return insertions;
  };
  auto build = [&](int64_t sentences) {
    return intro + "\n" + weave_noise(sentences, insertions_for(sentences)) + "\n" + question;
  };
  FittedPrompt fitted = fit_to_length(build, count_tokens, spec.target_tokens, haystack_policy(spec), spec.task);

  std::vector<size_t> order = answer_needles;
  if (answers_in_text_order) {
    const std::vector<Insertion> final_insertions = insertions_for(fitted.units);
    // Ties in slot are woven in vector order, so a stable sort by slot reproduces the text order.
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return final_insertions[a].slot < final_insertions[b].slot; });
  }
  Sample sample;
  sample.task = spec.task;
  sample.prompt = std::move(fitted.prompt);
  sample.prompt_tokens = fitted.tokens;
  for (size_t i : order) sample.answers.push_back(needles[i].value);
  sample.target = join_answers(sample.answers);
  sample.rule = ScoringRule::kAllContained;
  sample.depth = depth;
  return sample;
}

// `keys` needles with distinct keys and one value each; the first `queried` keys are asked for.
Sample distinct_key_needles(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens, int64_t keys,
                            int64_t queried) {
  const std::vector<std::string> key_words = distinct_word_keys(rng, keys);
  const std::vector<std::string> values = distinct_values(rng, spec.needle_value, keys);
  std::vector<Needle> needles;
  for (int64_t i = 0; i < keys; ++i) needles.push_back({key_words[i], values[i]});
  std::vector<size_t> answer_needles(queried);
  std::iota(answer_needles.begin(), answer_needles.end(), 0);
  const std::vector<std::string> queried_keys(key_words.begin(), key_words.begin() + queried);
  return assemble(spec, rng, count_tokens, std::move(needles), queried_keys, answer_needles,
                  /*answers_in_text_order=*/false);
}

}  // namespace

Sample make_niah_single(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens) {
  return distinct_key_needles(spec, rng, count_tokens, /*keys=*/1, /*queried=*/1);
}

Sample make_niah_multikey(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens) {
  return distinct_key_needles(spec, rng, count_tokens, /*keys=*/spec.num_needles, /*queried=*/1);
}

Sample make_niah_multiquery(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens) {
  return distinct_key_needles(spec, rng, count_tokens, /*keys=*/spec.num_queries, /*queried=*/spec.num_queries);
}

Sample make_niah_multivalue(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens) {
  const std::string key = distinct_word_keys(rng, 1)[0];
  const std::vector<std::string> values = distinct_values(rng, spec.needle_value, spec.num_values);
  std::vector<Needle> needles;
  for (const auto& value : values) needles.push_back({key, value});
  std::vector<size_t> answer_needles(values.size());
  std::iota(answer_needles.begin(), answer_needles.end(), 0);
  return assemble(spec, rng, count_tokens, std::move(needles), {key}, answer_needles,
                  /*answers_in_text_order=*/true);
}

}  // namespace kvforge::tasks
