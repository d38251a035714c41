#include "runtime/head_mixing.h"

namespace kvforge {

at::Tensor HeadMixing::mix(int64_t layer, const at::Tensor& full, const at::Tensor& streaming) const {
  const at::Tensor& gate = gates.at(layer);
  const int64_t heads = full.size(1), group = heads / gate.size(0);
  at::Tensor alpha = gate.repeat_interleave(group).view({1, heads, 1, 1}).to(full.scalar_type());
  const at::Tensor& full_term = teacher_outputs.empty() ? full : teacher_outputs.at(layer);
  return alpha * full_term + (1 - alpha) * streaming;
}

}  // namespace kvforge
