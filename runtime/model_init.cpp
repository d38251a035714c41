#include "runtime/model_init.h"

#include <ATen/CPUGeneratorImpl.h>
#include <cmath>
#include <torch/utils.h>

namespace kvforge {

void initialize_weights(Transformer& model, uint64_t seed, double std) {
  torch::NoGradGuard no_grad;
  // Draw on the CPU from our own generator so the weights do not depend on the device.
  at::Generator generator = at::detail::createCPUGenerator(seed);
  const double residual_std = std / std::sqrt(2.0 * static_cast<double>(model->config.num_layers));
  for (auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    at::Tensor& parameter = item.value();
    at::Tensor value;
    const bool is_norm = name.find("norm.weight") != std::string::npos;
    if (is_norm) {
      value = at::ones(parameter.sizes());
    } else if (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      value = at::zeros(parameter.sizes());
    } else {
      const bool residual = name.find("o_proj") != std::string::npos || name.find("down_proj") != std::string::npos;
      value = at::normal(0.0, residual ? residual_std : std, parameter.sizes(), generator);
    }
    parameter.copy_(value);
  }
}

}  // namespace kvforge
