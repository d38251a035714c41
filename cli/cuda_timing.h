#pragma once
// Timing for the benchmarks: the median of CUDA-event-timed runs after a warm-up.
#ifdef KVFORGE_HAVE_CUDA
#include <ATen/cuda/CUDAEvent.h>

#include <algorithm>
#include <functional>
#include <vector>

namespace kvforge {

// Median milliseconds of `iterations` runs of `work`, after three untimed ones.
inline double median_ms(const std::function<void()>& work, int64_t iterations) {
  for (int i = 0; i < 3; ++i) work();
  std::vector<double> times;
  for (int64_t i = 0; i < iterations; ++i) {
    at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
    start.record();
    work();
    stop.record();
    stop.synchronize();
    times.push_back(start.elapsed_time(stop));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace kvforge
#endif
