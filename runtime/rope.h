#pragma once
// Rotary position embeddings with the Llama-family scalings (none, linear, llama3), computed as
// Hugging Face does: fp32 angles, rotate-half layout (the two halves of head_dim are the pairs).
#include <ATen/ATen.h>

#include "runtime/model_config.h"

namespace kvforge {

// inv_freq: [head_dim / 2] float32, with the config's scaling applied.
at::Tensor rope_inverse_frequencies(const RopeConfig& rope, int64_t head_dim);

struct RopeAngles {
  at::Tensor cos;  // [batch, 1, tokens, head_dim], in the activations' dtype
  at::Tensor sin;
};

// positions: [batch, tokens] int64 (negative for padding, treated as 0).
RopeAngles rope_angles(const at::Tensor& inv_freq, const at::Tensor& positions, at::ScalarType dtype);

// x: [batch, heads, tokens, head_dim] -> x·cos + rotate_half(x)·sin
at::Tensor apply_rope(const at::Tensor& x, const RopeAngles& angles);
// The inverse rotation (x·cos − rotate_half(x)·sin): a rotated query or key back to its position-free form.
at::Tensor undo_rope(const at::Tensor& x, const RopeAngles& angles);

}  // namespace kvforge
