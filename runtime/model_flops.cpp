#include "runtime/model_flops.h"

#include <algorithm>

namespace kvforge {

double forward_flops(const ModelConfig& config, int64_t tokens, int64_t context, int64_t logit_tokens) {
  const double hidden = static_cast<double>(config.hidden_size);
  const double q_width = static_cast<double>(config.num_heads * config.head_dim);
  const double kv_width = static_cast<double>(config.num_kv_heads * config.head_dim);
  const double per_token_linear =
      2 * hidden * (2 * q_width + 2 * kv_width) + 2 * 3 * hidden * static_cast<double>(config.intermediate_size);
  double total = 0;
  for (int64_t l = 0; l < config.num_layers; ++l) {
    const int64_t window = config.sliding_window.empty() ? 0 : config.sliding_window[l];
    double keys = 0;  // visible keys summed over the new tokens
    for (int64_t i = 0; i < tokens; ++i) {
      const int64_t visible = context + i + 1;
      keys += static_cast<double>(window > 0 ? std::min(visible, window) : visible);
    }
    total += per_token_linear * static_cast<double>(tokens) + 2 * 2 * q_width * keys;
  }
  return total + 2 * hidden * static_cast<double>(config.vocab_size) * static_cast<double>(logit_tokens);
}

double kv_prediction_prefill_flops(const ModelConfig& base, const ModelConfig& auxiliary, int64_t prompt_tokens) {
  const int64_t read = prompt_tokens - 1;
  const double predictors = 2.0 * 2 * static_cast<double>(read * base.num_layers) *
                            static_cast<double>(auxiliary.num_kv_heads * auxiliary.head_dim) *
                            static_cast<double>(base.num_kv_heads * base.head_dim);
  return forward_flops(auxiliary, read, 0, 0) + predictors + forward_flops(base, 1, read, 1);
}

}  // namespace kvforge
