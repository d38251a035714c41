#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/decode_attention.h"

namespace kvforge::kernels {

void decode_attention_reference(const double* q, const double* k, const double* v, const int64_t* positions,
                                const int64_t* query_positions, double* out, const DecodeAttentionShape& shape,
                                const DecodeWindow& window, double scale) {
  const int64_t group = shape.heads / shape.kv_heads, dim = shape.head_dim, slots = shape.slots;
  std::vector<double> scores(static_cast<size_t>(slots));
  for (int64_t b = 0; b < shape.batch; ++b) {
    for (int64_t head = 0; head < shape.heads; ++head) {
      const double* query = q + (b * shape.heads + head) * dim;
      const int64_t base = (b * shape.kv_heads + head / group) * slots * dim;
      const int64_t* held = positions + (b * shape.kv_heads + head / group) * slots;
      auto attended = [&](int64_t s) {
        const int64_t position = held[s];
        return position >= 0 &&
               (window.window == 0 || query_positions[b] - position < window.window || position < window.sink);
      };
      double* result = out + (b * shape.heads + head) * dim;
      double largest = -std::numeric_limits<double>::infinity();
      for (int64_t s = 0; s < slots; ++s) {
        if (!attended(s)) continue;
        double dot = 0;
        for (int64_t d = 0; d < dim; ++d) dot += query[d] * k[base + s * dim + d];
        scores[s] = dot * scale;
        largest = std::max(largest, scores[s]);
      }
      for (int64_t d = 0; d < dim; ++d) result[d] = 0;
      if (largest == -std::numeric_limits<double>::infinity()) continue;
      double total = 0;
      for (int64_t s = 0; s < slots; ++s) {
        if (!attended(s)) continue;
        const double weight = std::exp(scores[s] - largest);
        total += weight;
        for (int64_t d = 0; d < dim; ++d) result[d] += weight * v[base + s * dim + d];
      }
      for (int64_t d = 0; d < dim; ++d) result[d] /= total;
    }
  }
}

}  // namespace kvforge::kernels
