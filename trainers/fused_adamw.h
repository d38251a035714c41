#pragma once
// AdamW whose update is ATen's fused multi-tensor kernel (_fused_adamw_): a handful of launches per step instead of
// about ten per parameter tensor. LibTorch's C++ AdamW loops over parameters; with ~60 tensors that loop took 4-6 ms
// of every step on an H200, more than the gradient all-reduce (models/small-base-gpu/scaling/). The state is
// LibTorch's AdamWParamState, so checkpoints read and write exactly as AdamW's; amsgrad falls back to AdamW's loop.
#include <torch/optim/adamw.h>

namespace kvforge {

class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace kvforge
