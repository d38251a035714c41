#pragma once
// Mixed-head attention (DuoAttention, RLKV): per layer and KV head a gate α, and each query head's output is
// α·full + (1−α)·streaming before o_proj, the streaming term attending to the sink + recent window only, both
// from the same q, k, v. Attached to a Transformer while gates are trained or rollouts sampled; the base
// weights never change. DuoAttention's distillation replaces the full term with the frozen teacher pass's
// output at the same layer, recorded by a first pass with `recording` on.
#include <ATen/ATen.h>

#include <vector>

namespace kvforge {

struct HeadMixing {
  std::vector<at::Tensor> gates;  // per layer [kv_heads] (the trainable α)
  int64_t sink_tokens = 128;
  int64_t recent_tokens = 256;
  // Recording pass: each layer stores its full-attention output here (detached) and uses it unmixed.
  bool recording = false;
  std::vector<at::Tensor> recorded;         // per layer [batch, heads, tokens, head_dim]
  std::vector<at::Tensor> teacher_outputs;  // when set: the full term of each layer (distillation)

  // α·full + (1−α)·streaming, α broadcast over each KV head's query group. full, streaming:
  // [batch, heads, tokens, head_dim]; the teacher's output replaces `full` when teacher_outputs is set.
  at::Tensor mix(int64_t layer, const at::Tensor& full, const at::Tensor& streaming) const;
};

}  // namespace kvforge
