#pragma once
// The processes a command runs as under torchrun (one without it): which device this rank uses and its process
// group. Trainers split each step's micro-batches over the ranks; eval splits each cell's batches.
#include <string>

#include "cli/recipe.h"
#include "runtime/parallel/distributed.h"

namespace kvforge {

// A recipe's `device` on this rank: under torchrun `cuda`, and `auto` where there is CUDA, mean cuda:LOCAL_RANK.
at::Device rank_device(const std::string& device, const DistributedEnv& env);

// torchrun's environment, the recipe's device on this rank and the process group. Only the main rank writes files;
// every rank computes the same held-out numbers.
struct Ranks {
  at::Device device;
  DataParallel parallel;
  bool is_main() const { return parallel.is_main(); }
  // What run_training, calibrate and run_eval take: null for one process.
  DataParallel* group() { return parallel.world_size() > 1 ? &parallel : nullptr; }
};
Ranks recipe_ranks(const Recipe& recipe);

}  // namespace kvforge
