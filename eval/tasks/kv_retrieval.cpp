// InfiniteBench-style key-value retrieval: a one-line JSON object of random uuid -> uuid pairs, sized to
// the budget, and one queried key whose pair sits at the sample's depth.
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "eval/tasks/generators.h"
#include "eval/tasks/haystack.h"

namespace kvforge::tasks {
namespace {

struct Pair {
  std::string key;
  std::string value;
};

// Distractor pairs drawn on demand from their own stream: pair i is the same however many pairs the length
// search asks for, and in whatever order.
class DistractorPairs {
 public:
  DistractorPairs(uint64_t seed, std::string query_key) : rng_(seed) { keys_.insert(std::move(query_key)); }

  const std::vector<Pair>& first(int64_t count) {
    while (static_cast<int64_t>(pairs_.size()) < count) {
      std::string key = random_uuid4(rng_);
      std::string value = random_uuid4(rng_);
      // A repeated 122-bit key is practically impossible, but a duplicate would make the answer ambiguous.
      if (keys_.insert(key).second) pairs_.push_back({std::move(key), std::move(value)});
    }
    return pairs_;
  }

 private:
  Rng rng_;
  std::set<std::string> keys_;
  std::vector<Pair> pairs_;
};

std::string json_entry(const Pair& pair) { return "\"" + pair.key + "\": \"" + pair.value + "\""; }

}  // namespace

Sample make_kv_retrieval(const TaskSpec& spec, Rng& rng, const TokenCounter& count_tokens) {
  const Pair query{random_uuid4(rng), random_uuid4(rng)};
  const double depth = draw_depth(spec, rng);
  DistractorPairs distractors(rng.next_u64(), query.key);

  auto build = [&](int64_t pair_count) {
    const std::vector<Pair>& pairs = distractors.first(pair_count);
    const int64_t query_slot = slot_at_depth(depth, pair_count);
    std::string json = "{";
    for (int64_t i = 0; i <= pair_count; ++i) {
      if (i > 0) json += ", ";
      if (i < query_slot)
        json += json_entry(pairs[i]);
      else if (i == query_slot)
        json += json_entry(query);
      else
        json += json_entry(pairs[i - 1]);
    }
    json += "}";
    return "Extract the value corresponding to the specified key in the JSON object below.\n\nJSON data:\n" + json +
           "\n\nKey: \"" + query.key + "\"\nThe value associated with the specified key is:";
  };
  FittedPrompt fitted = fit_to_length(build, count_tokens, spec.target_tokens, haystack_policy(spec), spec.task);

  Sample sample;
  sample.task = spec.task;
  sample.prompt = std::move(fitted.prompt);
  sample.prompt_tokens = fitted.tokens;
  sample.target = " " + query.value + ".";
  sample.answers = {query.value};
  sample.rule = ScoringRule::kAllContained;
  sample.depth = depth;
  return sample;
}

}  // namespace kvforge::tasks
