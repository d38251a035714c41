#include "runtime/rope.h"

#include <cmath>
#include <vector>

namespace kvforge {

at::Tensor rope_inverse_frequencies(const RopeConfig& rope, int64_t head_dim) {
  std::vector<float> inv_freq(head_dim / 2);
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    // Same float32 rounding as the reference: exponent in fp32, power in fp32.
    float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    float freq = 1.0f / std::pow(static_cast<float>(rope.theta), exponent);
    switch (rope.type) {
      case RopeType::kDefault:
        break;
      case RopeType::kLinear:
        freq = static_cast<float>(freq / rope.factor);
        break;
      case RopeType::kLlama3: {
        // Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
        const double context = static_cast<double>(rope.original_max_position_embeddings);
        const double low_freq_wavelen = context / rope.low_freq_factor;
        const double high_freq_wavelen = context / rope.high_freq_factor;
        const double wavelen = 2.0 * M_PI / freq;
        if (wavelen > low_freq_wavelen) {
          freq = static_cast<float>(freq / rope.factor);
        } else if (wavelen >= high_freq_wavelen) {
          const double smooth = (context / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
          freq = static_cast<float>((1.0 - smooth) * freq / rope.factor + smooth * freq);
        }
        break;
      }
    }
    inv_freq[i] = freq;
  }
  return at::tensor(inv_freq, at::kFloat);
}

RopeAngles rope_angles(const at::Tensor& inv_freq, const at::Tensor& positions, at::ScalarType dtype) {
  // angles: [batch, tokens, head_dim / 2] in fp32, duplicated to cover both halves.
  at::Tensor angles = positions.clamp_min(0).to(at::kFloat).unsqueeze(-1) * inv_freq.to(positions.device()).view({1, 1, -1});
  at::Tensor both = at::cat({angles, angles}, -1).unsqueeze(1);
  return {both.cos().to(dtype), both.sin().to(dtype)};
}

namespace {

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

at::Tensor apply_rope(const at::Tensor& x, const RopeAngles& angles) {
  return x * angles.cos + rotate_half(x) * angles.sin;
}

at::Tensor undo_rope(const at::Tensor& x, const RopeAngles& angles) {
  return x * angles.cos - rotate_half(x) * angles.sin;
}

}  // namespace kvforge
