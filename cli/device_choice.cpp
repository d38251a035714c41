#include "cli/device_choice.h"

#include <torch/cuda.h>

#include "runtime/input_error.h"
#include "runtime/model_loader.h"

namespace kvforge {

at::Device parse_device(const std::string& name, const std::string& origin) {
  if (name == "auto") return torch::cuda::is_available() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  if (name == "cpu") return at::Device(at::kCPU);
  if (name.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available()) fail_input(origin, "device", "'" + name + "' requested but no CUDA device is visible");
    try {
      at::Device device(name);
      if (device.index() >= static_cast<int64_t>(torch::cuda::device_count()))
        fail_input(origin, "device", "'" + name + "' but only " + std::to_string(torch::cuda::device_count()) + " GPU(s)");
      return device;
    } catch (const c10::Error&) {
    }
  }
  fail_input(origin, "device", "expected auto, cpu, cuda or cuda:N; got '" + name + "'");
}

at::ScalarType parse_model_dtype(const std::string& name, const at::Device& device, const std::string& origin) {
  if (name == "auto") return device.is_cuda() ? at::kBFloat16 : at::kFloat;
  return parse_dtype_name(name, origin, "dtype");
}

}  // namespace kvforge
