#pragma once
// Embedded English words for needle keys, so that no task needs a file at run time.
#include <cstdint>
#include <string>
#include <vector>

#include "eval/tasks/rng.h"

namespace kvforge::tasks {

// Common lowercase adjectives and nouns, distinct, ASCII letters only.
const std::vector<std::string>& adjectives();
const std::vector<std::string>& nouns();

// `count` distinct "adjective-noun" keys, the shape RULER uses for word keys; count <= kMaxWordKeys.
constexpr int64_t kMaxWordKeys = 1000;
std::vector<std::string> distinct_word_keys(Rng& rng, int64_t count);

}  // namespace kvforge::tasks
