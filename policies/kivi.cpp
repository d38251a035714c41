#include <algorithm>
#include <string>

#include "policies/baselines.h"
#include "runtime/input_error.h"

namespace kvforge {

CachePlan plan_kivi(const PolicySpec& spec, const ModelConfig& config, int64_t /*prompt_tokens*/) {
  CachePlan plan{spec.label, CacheLayout::kQuantized, {}, {}};
  plan.quantization.bits = static_cast<int64_t>(spec.parameters.at("bits"));
  // KIVI's group of 32 channels/tokens, or the whole head when it is smaller.
  plan.quantization.group_size = std::min<int64_t>(static_cast<int64_t>(spec.parameters.at("group")), config.head_dim);
  if (config.head_dim % plan.quantization.group_size != 0)
    fail_input("policy " + spec.label, "group",
               "expected a divisor of head_dim " + std::to_string(config.head_dim) + ", got " +
                   std::to_string(plan.quantization.group_size));
  plan.quantization.residual_tokens = static_cast<int64_t>(spec.parameters.at("residual"));
  return plan;
}

}  // namespace kvforge
