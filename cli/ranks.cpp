#include "cli/ranks.h"

#include <torch/cuda.h>

#include "cli/device_choice.h"

namespace kvforge {

at::Device rank_device(const std::string& device, const DistributedEnv& env) {
  const bool cuda = device == "cuda" || (device == "auto" && torch::cuda::is_available());
  return parse_device(env.world_size > 1 && cuda ? "cuda:" + std::to_string(env.local_rank) : device, "device");
}

Ranks recipe_ranks(const Recipe& recipe) {
  const DistributedEnv env = read_distributed_env();
  const at::Device device = rank_device(recipe.get_string("device"), env);
  return Ranks{device, DataParallel(env, device, env.timeout)};
}

}  // namespace kvforge
