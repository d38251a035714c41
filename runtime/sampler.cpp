#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <vector>

namespace kvforge {

void validate(const SamplingOptions& options) {
  if (!(options.temperature >= 0.0) || !std::isfinite(options.temperature))
    throw std::invalid_argument("temperature: expected a finite number >= 0");
  if (options.top_k < 0) throw std::invalid_argument("top_k: expected >= 0 (0 turns it off)");
  if (!(options.top_p > 0.0 && options.top_p <= 1.0)) throw std::invalid_argument("top_p: expected in (0, 1]");
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), generator_(options.seed) { validate(options); }

int64_t Sampler::next(const at::Tensor& logits) {
  at::Tensor row = logits.detach().to(at::kCPU, at::kFloat).contiguous();
  const float* values = row.data_ptr<float>();
  const int64_t vocab = row.numel();
  if (options_.temperature == 0.0) return std::max_element(values, values + vocab) - values;

  // Candidates sorted by logit (descending; ties keep the lower id first), cut by top-k.
  std::vector<int64_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return values[a] > values[b]; });
  if (options_.top_k > 0 && options_.top_k < vocab) order.resize(options_.top_k);

  std::vector<double> probs(order.size());
  const double top = values[order[0]] / options_.temperature;
  double total = 0.0;
  for (size_t i = 0; i < order.size(); ++i) {
    probs[i] = std::exp(values[order[i]] / options_.temperature - top);
    total += probs[i];
  }
  // top-p: the smallest prefix whose probability reaches top_p (at least one token).
  size_t keep = order.size();
  if (options_.top_p < 1.0) {
    double cumulative = 0.0;
    for (size_t i = 0; i < order.size(); ++i) {
      cumulative += probs[i] / total;
      if (cumulative >= options_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept_total = std::accumulate(probs.begin(), probs.begin() + keep, 0.0);
  double draw = std::uniform_real_distribution<double>(0.0, kept_total)(generator_);
  for (size_t i = 0; i < keep; ++i) {
    draw -= probs[i];
    if (draw < 0.0) return order[i];
  }
  return order[keep - 1];
}

}  // namespace kvforge
