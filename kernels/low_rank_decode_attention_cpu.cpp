#include <cmath>
#include <vector>

#include "kernels/decode_attention.h"
#include "kernels/low_rank_decode_attention.h"

namespace kvforge::kernels {

void low_rank_decode_attention_reference(const double* q, const double* key_latents, const double* value_latents,
                                         const double* key_up, const double* value_up, const double* key_bias,
                                         const double* value_bias, const int64_t* latent_positions,
                                         const double* exact_keys, const double* exact_values,
                                         const int64_t* exact_positions, const float* inv_freq, double* out,
                                         const LowRankDecodeShape& shape, double scale) {
  // Rebuild every latent token's key (rotated at its position) and value, lay them before the exact tokens in
  // the plain cache layout, and attend with the plain reference.
  const int64_t heads = shape.kv_heads, dim = shape.head_dim, half = dim / 2;
  const int64_t latent = shape.latent_tokens, slots = latent + shape.exact_tokens;
  std::vector<double> keys(static_cast<size_t>(shape.batch * heads * slots * dim));
  std::vector<double> values(keys.size());
  std::vector<int64_t> positions(static_cast<size_t>(shape.batch * heads * slots));
  std::vector<double> key(static_cast<size_t>(dim));
  for (int64_t b = 0; b < shape.batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t base = (b * heads + h) * slots;
      for (int64_t t = 0; t < latent; ++t) {
        const double* key_latent = key_latents + (b * shape.latent_stride + t) * shape.key_rank;
        const double* value_latent = value_latents + (b * shape.latent_stride + t) * shape.value_rank;
        const int64_t position = latent_positions[b * shape.latent_stride + t];
        for (int64_t d = 0; d < dim; ++d) {
          const int64_t row = h * dim + d;
          double k = key_bias != nullptr ? key_bias[row] : 0, v = value_bias != nullptr ? value_bias[row] : 0;
          for (int64_t i = 0; i < shape.key_rank; ++i) k += key_up[row * shape.key_rank + i] * key_latent[i];
          for (int64_t i = 0; i < shape.value_rank; ++i) v += value_up[row * shape.value_rank + i] * value_latent[i];
          key[d] = k;
          values[(base + t) * dim + d] = v;
        }
        for (int64_t j = 0; j < half; ++j) {  // rotate-half RoPE at the token's position
          const double angle = static_cast<double>(position < 0 ? 0 : position) * static_cast<double>(inv_freq[j]);
          const double c = std::cos(angle), s = std::sin(angle);
          keys[(base + t) * dim + j] = key[j] * c - key[j + half] * s;
          keys[(base + t) * dim + j + half] = key[j + half] * c + key[j] * s;
        }
        positions[base + t] = position;
      }
      for (int64_t t = 0; t < shape.exact_tokens; ++t) {
        for (int64_t d = 0; d < dim; ++d) {
          const int64_t from = ((b * heads + h) * shape.exact_tokens + t) * dim + d;
          keys[(base + latent + t) * dim + d] = exact_keys[from];
          values[(base + latent + t) * dim + d] = exact_values[from];
        }
        positions[base + latent + t] = exact_positions[b * shape.exact_tokens + t];
      }
    }
  }
  DecodeAttentionShape plain{shape.batch, shape.heads, heads, dim, slots};
  std::vector<int64_t> unused(static_cast<size_t>(shape.batch), 0);
  decode_attention_reference(q, keys.data(), values.data(), positions.data(), unused.data(), out, plain, {}, scale);
}

}  // namespace kvforge::kernels
