#pragma once
// Timing for the benchmarks: CUDA events around bursts of back-to-back runs, after a warm-up.
#ifdef KVFORGE_HAVE_CUDA
#include <ATen/cuda/CUDAEvent.h>

#include <algorithm>
#include <functional>
#include <vector>

namespace kvforge {

// Median over `iterations` bursts of the milliseconds per run of `work`, each burst kBurst runs back to back after
// three untimed ones. Back to back, each run's launches are queued while the previous one executes, as in a decode
// step where layer l's attention is launched while layer l - 1 runs: host-side preparation is hidden wherever the GPU
// work takes longer, and a single timed run would charge it to the kernel.
inline double median_ms(const std::function<void()>& work, int64_t iterations) {
  constexpr int kBurst = 10;
  for (int i = 0; i < 3; ++i) work();
  std::vector<double> times;
  for (int64_t i = 0; i < iterations; ++i) {
    at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
    start.record();
    for (int run = 0; run < kBurst; ++run) work();
    stop.record();
    stop.synchronize();
    times.push_back(start.elapsed_time(stop) / kBurst);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace kvforge
#endif
