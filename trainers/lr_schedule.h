#pragma once
// Learning-rate schedules: linear warmup, then cosine decay to min_lr_ratio × peak (or constant).
#include <cstdint>
#include <string>

namespace kvforge {

struct LrSchedule {
  std::string kind = "cosine";  // cosine | constant
  double peak_lr = 1e-3;
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.1;  // cosine ends at peak_lr × min_lr_ratio
  int64_t total_steps = 1;

  // Learning rate for optimizer step `step` (0-based).
  double at(int64_t step) const;
};

}  // namespace kvforge
