#include "eval/tasks/haystack.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <utility>

namespace kvforge::tasks {

const std::vector<std::string> kNoiseSentences = {
    "The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.",
};

std::string weave_noise(int64_t sentences, const std::vector<Insertion>& insertions) {
  std::vector<size_t> order(insertions.size());
  std::iota(order.begin(), order.end(), 0);
  auto clamped = [&](size_t i) { return std::clamp<int64_t>(insertions[i].slot, 0, sentences); };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return clamped(a) < clamped(b); });

  std::string text;
  auto start_line = [&] {
    if (!text.empty()) text += '\n';
  };
  size_t next = 0;
  int64_t sentence = 0;
  while (sentence < sentences || next < order.size()) {
    if (next < order.size() && clamped(order[next]) <= sentence) {
      start_line();
      text += insertions[order[next++]].text;
      continue;
    }
    // A run of noise up to the next insertion (or the end) forms one line.
    const int64_t run_end = next < order.size() ? clamped(order[next]) : sentences;
    start_line();
    for (int64_t i = sentence; i < run_end; ++i) {
      if (i > sentence) text += ' ';
      text += kNoiseSentences[i % kNoiseSentences.size()];
    }
    sentence = run_end;
  }
  return text;
}

double draw_depth(const TaskSpec& spec, Rng& rng) {
  const int64_t grid_point = rng.uniform_int(0, kDepthGridPoints - 1);
  if (spec.depth >= 0) return spec.depth;
  return static_cast<double>(grid_point) / static_cast<double>(kDepthGridPoints - 1);
}

int64_t slot_at_depth(double depth, int64_t units) {
  return std::clamp<int64_t>(std::llround(depth * static_cast<double>(units)), 0, units);
}

int64_t draw_place(Rng& rng) { return rng.uniform_int(0, kPlaceResolution); }

int64_t slot_at_place(int64_t place, int64_t units) { return place * units / kPlaceResolution; }

LengthPolicy haystack_policy(const TaskSpec& spec) {
  return spec.grow_to_minimum ? LengthPolicy::kPadIfRoom : LengthPolicy::kRequireFit;
}

FittedPrompt fit_to_length(const PromptBuilder& build, const TokenCounter& count_tokens, int64_t target_tokens,
                           LengthPolicy policy, const std::string& task) {
  FittedPrompt best;
  best.prompt = build(0);
  best.tokens = count_tokens(best.prompt);
  if (best.tokens > target_tokens) {
    if (policy == LengthPolicy::kPadIfRoom) return best;
    throw std::invalid_argument(task + ": target_tokens " + std::to_string(target_tokens) +
                                " is below the minimum of " + std::to_string(best.tokens) +
                                " tokens (the prompt with an empty haystack); ask for at least " +
                                std::to_string(best.tokens));
  }
  const int64_t empty_tokens = best.tokens;
  const double empty_bytes = static_cast<double>(best.prompt.size());
  const double room = static_cast<double>(target_tokens - empty_tokens);

  // Invariant: `lo` units fit, `hi` units do not (hi = cap + 1 stands for "past the cap"). Probes stay strictly
  // between them, so the invariant holds even for a counter that is not monotone.
  int64_t lo = 0;
  int64_t hi = target_tokens + 2;
  int64_t last_units = 0;
  int64_t last_tokens = empty_tokens;
  auto probe = [&](int64_t units) {
    std::string prompt = build(units);
    const int64_t tokens = count_tokens(prompt);
    last_units = units;
    last_tokens = tokens;
    if (tokens <= target_tokens) {
      lo = units;
      best = {units, std::move(prompt), tokens};
      return true;
    }
    hi = units;
    return false;
  };
  // Clamps before converting, so that a wild guess (or NaN) cannot overflow the cast.
  auto inside = [&](double units) {
    if (!(units >= static_cast<double>(lo + 1))) return lo + 1;
    if (units >= static_cast<double>(hi - 1)) return hi - 1;
    return static_cast<int64_t>(units);
  };
  auto open = [&] { return hi - lo > 1; };

  // 1. A first guess from the empty prompt's bytes per token and one unit's bytes (building costs no count).
  if (open()) {
    const double unit_bytes = std::max(1.0, static_cast<double>(build(1).size()) - empty_bytes);
    const double bytes_per_token = empty_bytes / static_cast<double>(std::max<int64_t>(empty_tokens, 1));
    probe(inside(room * bytes_per_token / unit_bytes));
  }
  // 2. A second guess from the tokens per unit that the first probe measured; usually within a unit or two.
  int64_t estimate = lo;
  if (open() && last_units > 0 && last_tokens > empty_tokens) {
    const double tokens_per_unit = static_cast<double>(last_tokens - empty_tokens) / static_cast<double>(last_units);
    estimate = inside(room / tokens_per_unit);
  }
  // 3. Gallop away from the estimate until the answer is bracketed, then bisect: O(log distance) probes.
  if (open()) {
    const bool estimate_fits = estimate > lo && estimate < hi ? probe(estimate) : true;
    int64_t step = 1;
    if (estimate_fits) {
      while (open() && probe(std::min(lo + step, hi - 1))) step *= 2;
    } else {
      while (open() && !probe(std::max(hi - step, lo + 1))) step *= 2;
    }
  }
  while (open()) probe(lo + (hi - lo) / 2);
  return best;
}

}  // namespace kvforge::tasks
