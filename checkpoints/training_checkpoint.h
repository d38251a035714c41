#pragma once
// Training checkpoints: everything needed to continue a run exactly.
//   <out_dir>/checkpoints/step-00000120/
//       state.safetensors   checkpointed tensors + the CPU generator state; metadata: step, recipe
//       optimizer.pt        the LibTorch optimizer state (moments, step counts)
// A checkpoint is written into a temporary folder and renamed into place, so a crash never leaves a
// half-written one; only the newest `keep` are kept.
#include <ATen/ATen.h>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace torch::optim {
class Optimizer;
}

namespace kvforge {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Saves after `step` steps have completed.
void save_training_checkpoint(const std::string& out_dir, int64_t step, const NamedTensors& tensors,
                              torch::optim::Optimizer& optimizer, const std::map<std::string, std::string>& metadata,
                              int64_t keep);

// The newest complete checkpoint folder under out_dir, if any.
std::optional<std::string> latest_checkpoint(const std::string& out_dir);

// Copies the saved values into `tensors` (matched by name; a missing or misshapen one is an
// InputError), restores the optimizer and the CPU generator, and returns the completed step count.
int64_t load_training_checkpoint(const std::string& checkpoint_dir, const NamedTensors& tensors,
                                 torch::optim::Optimizer& optimizer);

}  // namespace kvforge
