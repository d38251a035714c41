#include "trainers/rlkv/head_gates.h"

#include <torch/torch.h>

#include <cmath>

namespace kvforge::rlkv {

HeadGates::HeadGates(const ModelConfig& config, int64_t sink_tokens, int64_t recent_tokens, const at::Device& device) {
  values = at::ones({config.num_layers, config.num_kv_heads}, at::TensorOptions().dtype(at::kFloat).device(device))
               .set_requires_grad(true);
  mixing.sink_tokens = sink_tokens;
  mixing.recent_tokens = recent_tokens;
  refresh();
}

void HeadGates::refresh() { mixing.gates = values.unbind(0); }

void HeadGates::clamp() {
  torch::NoGradGuard no_grad;
  values.clamp_(0, 1);
}

double penalty_scale(double mean_reward, double beta, double tau) {
  return mean_reward > tau ? beta * (std::exp(mean_reward) - 1) : 0.0;
}

}  // namespace kvforge::rlkv
