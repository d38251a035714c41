#pragma once
// The filler around needles and the search that sizes it. A haystack is counted in units (noise sentences,
// JSON pairs); a task supplies build(units) -> prompt, and fit_to_length finds the most units whose prompt
// still fits the token budget, with O(log units) calls to the (possibly slow) token counter.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "eval/tasks/rng.h"
#include "eval/tasks/task.h"

namespace kvforge::tasks {

// The five sentences of the passkey / RULER "noise" haystack; unit i is kNoiseSentences[i % 5].
extern const std::vector<std::string> kNoiseSentences;

// Text placed on its own line before noise sentence `slot` (slot == sentences puts it after the last one).
struct Insertion {
  int64_t slot;
  std::string text;
};

// `sentences` noise sentences joined by spaces, broken into lines around the insertions. Insertions with
// equal slots keep their order in the vector; slots are clamped to [0, sentences].
std::string weave_noise(int64_t sentences, const std::vector<Insertion>& insertions);

// RULER places needles at depths from linspace(0, 100, 40).
constexpr int64_t kDepthGridPoints = 40;

// Always draws a grid point, so an explicit spec.depth changes the needle's place but no other content.
double draw_depth(const TaskSpec& spec, Rng& rng);

// The slot of depth in [0,1] among `units` units: round(depth * units).
int64_t slot_at_depth(double depth, int64_t units);

// A uniformly random place, kept as a fraction in millionths so that it can be drawn before the haystack
// is sized.
constexpr int64_t kPlaceResolution = 1000000;
int64_t draw_place(Rng& rng);
int64_t slot_at_place(int64_t place, int64_t units);

using PromptBuilder = std::function<std::string(int64_t units)>;

enum class LengthPolicy {
  kRequireFit,  // throw std::invalid_argument if build(0) exceeds the budget
  kPadIfRoom,   // return build(0) as it is if it exceeds the budget
};

// kRequireFit, unless the spec asks to grow a too-small target to the minimal prompt.
LengthPolicy haystack_policy(const TaskSpec& spec);

struct FittedPrompt {
  int64_t units = 0;
  std::string prompt;
  int64_t tokens = 0;
};

// The largest unit count whose prompt has at most target_tokens tokens, assuming tokens do not decrease as
// units grow (for other counters the result still fits, it may just be shorter). Units are capped at
// target_tokens + 1, since any real tokenizer spends at least one token per unit.
FittedPrompt fit_to_length(const PromptBuilder& build, const TokenCounter& count_tokens, int64_t target_tokens,
                           LengthPolicy policy, const std::string& task);

}  // namespace kvforge::tasks
