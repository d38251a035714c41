#pragma once
// The random source of every task. std::mt19937_64's output sequence is fixed by the C++ standard, but the
// std distributions are not (libstdc++, libc++ and MSVC map the same bits to different numbers), so all
// draws go through uniform_int below and samples are byte-identical on every platform.
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace kvforge::tasks {

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}

  uint64_t next_u64() { return engine_(); }
  // Uniform over [lo, hi], both included; lo <= hi.
  int64_t uniform_int(int64_t lo, int64_t hi);

 private:
  std::mt19937_64 engine_;
};

// The seed of one sample: FNV-1a over the task name and the little-endian bytes of the numbers, then a
// splitmix64 finaliser so that neighbouring indices give unrelated engine states.
uint64_t sample_seed(const std::string& task, int64_t target_tokens, uint64_t seed, int64_t index);

// A random (version 4, RFC 4122 variant) UUID in lowercase 8-4-4-4-12 hex.
std::string random_uuid4(Rng& rng);

// A decimal number of exactly `digits` digits (no leading zero); 1 <= digits <= 18.
std::string random_number(Rng& rng, int64_t digits);

// A Fisher-Yates shuffle driven by uniform_int (std::shuffle's use of the engine is unspecified).
template <typename T>
void shuffle_in_place(std::vector<T>& items, Rng& rng) {
  for (int64_t i = static_cast<int64_t>(items.size()) - 1; i > 0; --i)
    std::swap(items[i], items[rng.uniform_int(0, i)]);
}

}  // namespace kvforge::tasks
