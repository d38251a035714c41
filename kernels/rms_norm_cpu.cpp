#include <cmath>

#include "kernels/rms_norm.h"

namespace kvforge::kernels {

void rms_norm_reference(const double* x, const double* weight, double* out, int64_t rows, int64_t dim, double eps) {
  for (int64_t row = 0; row < rows; ++row) {
    const double* in = x + row * dim;
    double sum_squares = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum_squares += in[i] * in[i];
    const double scale = 1.0 / std::sqrt(sum_squares / static_cast<double>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) out[row * dim + i] = weight[i] * (in[i] * scale);
  }
}

}  // namespace kvforge::kernels
