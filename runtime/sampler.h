#pragma once
// Next-token choice from logits: greedy, or temperature / top-k / top-p sampling from a seeded
// generator. Runs on the CPU over one row at a time, so the same seed gives the same tokens on any
// device.
#include <ATen/ATen.h>
#include <cstdint>
#include <random>

namespace kvforge {

struct SamplingOptions {
  double temperature = 0.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // 1 = off
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // logits: [vocab] float (any device). Greedy picks the first maximum, as torch.argmax does.
  int64_t next(const at::Tensor& logits);

 private:
  SamplingOptions options_;
  std::mt19937_64 generator_;
};

// Throws std::invalid_argument naming the bad option.
void validate(const SamplingOptions& options);

}  // namespace kvforge
