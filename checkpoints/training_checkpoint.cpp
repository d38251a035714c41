#include "checkpoints/training_checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <algorithm>
#include <mutex>
#include <filesystem>
#include <torch/optim/optimizer.h>
#include <torch/serialize.h>
#include <torch/utils.h>

#include "runtime/file_system.h"
#include "runtime/input_error.h"
#include "runtime/tensor_io.h"

namespace kvforge {
namespace {

namespace fs = std::filesystem;

constexpr const char* kStateFile = "state.safetensors";
constexpr const char* kOptimizerFile = "optimizer.pt";
constexpr const char* kGeneratorTensor = "__rng.cpu_state";

std::string step_dir_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%08lld", static_cast<long long>(step));
  return name;
}

// Completed checkpoints, oldest first (the zero-padded names sort by step).
std::vector<fs::path> checkpoint_dirs(const std::string& out_dir) {
  std::vector<fs::path> dirs;
  const fs::path root = fs::path(out_dir) / "checkpoints";
  if (!fs::is_directory(root)) return dirs;
  for (const auto& entry : fs::directory_iterator(root)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && name.rfind("step-", 0) == 0 && name.find('.') == std::string::npos &&
        fs::exists(entry.path() / kStateFile) && fs::exists(entry.path() / kOptimizerFile))
      dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

}  // namespace

void save_training_checkpoint(const std::string& out_dir, int64_t step, const NamedTensors& tensors,
                              torch::optim::Optimizer& optimizer, const std::map<std::string, std::string>& metadata,
                              int64_t keep) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  fs::create_directories(root);
  const fs::path final_dir = root / step_dir_name(step);
  const fs::path temp_dir = root / (step_dir_name(step) + ".tmp");
  remove_tree(temp_dir.string());
  fs::create_directories(temp_dir);

  NamedTensors state = tensors;
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  at::Tensor generator_state;
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator_state = generator.get_state();
  }
  state.emplace_back(kGeneratorTensor, generator_state);
  std::map<std::string, std::string> meta = metadata;
  meta["kvforge.step"] = std::to_string(step);
  save_tensors((temp_dir / kStateFile).string(), state, meta);
  torch::save(optimizer, (temp_dir / kOptimizerFile).string());

  remove_tree(final_dir.string());
  fs::rename(temp_dir, final_dir);
  std::vector<fs::path> dirs = checkpoint_dirs(out_dir);
  for (size_t i = 0; i + static_cast<size_t>(std::max<int64_t>(keep, 1)) < dirs.size(); ++i) remove_tree(dirs[i].string());
}

std::optional<std::string> latest_checkpoint(const std::string& out_dir) {
  std::vector<fs::path> dirs = checkpoint_dirs(out_dir);
  if (dirs.empty()) return std::nullopt;
  return dirs.back().string();
}

int64_t load_training_checkpoint(const std::string& checkpoint_dir, const NamedTensors& tensors,
                                 torch::optim::Optimizer& optimizer) {
  const std::string state_path = (fs::path(checkpoint_dir) / kStateFile).string();
  SafetensorsFile state = SafetensorsFile::open(state_path);
  torch::NoGradGuard no_grad;
  for (const auto& [name, tensor] : tensors) {
    const TensorEntry* entry = state.find(name);
    if (entry == nullptr) fail_input(state_path, "tensor '" + name + "'", "missing (checkpoint of another recipe?)");
    at::Tensor saved = view_tensor(state, *entry);
    if (saved.sizes() != tensor.sizes())
      fail_input(state_path, "tensor '" + name + "'.shape", "does not match the model being trained");
    at::Tensor target = tensor;
    target.copy_(saved);
  }
  if (const TensorEntry* entry = state.find(kGeneratorTensor))
  {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(view_tensor(state, *entry).clone());
  }
  // Optimizer moments go back to the device the parameters live on.
  const c10::optional<at::Device> device = tensors.empty() ? c10::nullopt : c10::optional<at::Device>(tensors.front().second.device());
  torch::load(optimizer, (fs::path(checkpoint_dir) / kOptimizerFile).string(), device);
  auto step = state.metadata().find("kvforge.step");
  if (step == state.metadata().end()) fail_input(state_path, "__metadata__.kvforge.step", "missing");
  try {
    return std::stoll(step->second);
  } catch (const std::exception&) {
    fail_input(state_path, "__metadata__.kvforge.step", "expected an integer, got '" + step->second + "'");
  }
}

}  // namespace kvforge
