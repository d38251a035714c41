#include "eval/tasks/rng.h"

#include <stdexcept>

namespace kvforge::tasks {

int64_t Rng::uniform_int(int64_t lo, int64_t hi) {
  if (lo > hi) throw std::logic_error("uniform_int: empty range");
  // Unsigned arithmetic: hi - lo may exceed INT64_MAX.
  const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) + 1;
  if (span == 0) return static_cast<int64_t>(engine_());  // the whole 64-bit range
  // Rejecting the lowest 2^64 mod span draws leaves a multiple of span values, so x % span is unbiased.
  const uint64_t reject_below = (0 - span) % span;
  uint64_t draw = engine_();
  while (draw < reject_below) draw = engine_();
  return static_cast<int64_t>(static_cast<uint64_t>(lo) + draw % span);
}

namespace {

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

void fnv_mix(uint64_t& hash, uint64_t value) {
  for (int byte = 0; byte < 8; ++byte) {
    hash ^= (value >> (8 * byte)) & 0xff;
    hash *= kFnvPrime;
  }
}

uint64_t splitmix64_finalize(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t sample_seed(const std::string& task, int64_t target_tokens, uint64_t seed, int64_t index) {
  uint64_t hash = kFnvOffset;
  for (unsigned char c : task) {
    hash ^= c;
    hash *= kFnvPrime;
  }
  // The length separates the name from the numbers, so no two (name, numbers) tuples share a byte stream.
  fnv_mix(hash, task.size());
  fnv_mix(hash, static_cast<uint64_t>(target_tokens));
  fnv_mix(hash, seed);
  fnv_mix(hash, static_cast<uint64_t>(index));
  return splitmix64_finalize(hash);
}

std::string random_uuid4(Rng& rng) {
  uint64_t high = rng.next_u64();
  uint64_t low = rng.next_u64();
  high = (high & ~0xf000ULL) | 0x4000ULL;            // version 4 in bits 48..51 of the 128
  low = (low & ~(0xc0ULL << 56)) | (0x80ULL << 56);  // variant 10xx in the top bits of byte 8
  static const char kHex[] = "0123456789abcdef";
  std::string text;
  text.reserve(36);
  for (int nibble = 0; nibble < 32; ++nibble) {
    if (nibble == 8 || nibble == 12 || nibble == 16 || nibble == 20) text += '-';
    const uint64_t word = nibble < 16 ? high : low;
    text += kHex[(word >> (4 * (15 - nibble % 16))) & 0xf];
  }
  return text;
}

std::string random_number(Rng& rng, int64_t digits) {
  if (digits < 1 || digits > 18) throw std::logic_error("random_number: digits outside [1, 18]");
  int64_t low = 1;
  for (int64_t i = 1; i < digits; ++i) low *= 10;
  return std::to_string(rng.uniform_int(digits == 1 ? 0 : low, low * 10 - 1));
}

}  // namespace kvforge::tasks
