#pragma once
// The trainable part of RLKV and DuoAttention: one gate α per layer and KV head, initialised to 1 (every head
// full) and projected into [0, 1] before every step, attached to the frozen model as mixed-head attention.
#include <ATen/ATen.h>

#include "runtime/head_mixing.h"
#include "runtime/model_config.h"

namespace kvforge::rlkv {

struct HeadGates {
  HeadGates(const ModelConfig& config, int64_t sink_tokens, int64_t recent_tokens, const at::Device& device);

  // Points the mixing at the current values (call at the start of every forward that should see them).
  void refresh();
  void clamp();  // in place into [0, 1], outside autograd

  at::Tensor values;  // [layers, kv_heads] float32 leaf with grad
  HeadMixing mixing;
};

// RLKV's L1 penalty weight: β·(exp(r̄) − 1) when the raw mean reward r̄ of the batch exceeds τ, else 0, so
// sparsity is only pushed once the policy solves the task.
double penalty_scale(double mean_reward, double beta, double tau);

}  // namespace kvforge::rlkv
