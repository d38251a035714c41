#include "trainers/prefixkv/budget_search.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <stdexcept>

namespace kvforge::prefixkv {

CumulativeImportance cumulative_importance(const std::vector<double>& importance) {
  CumulativeImportance layer;
  layer.cumulative = importance;
  std::sort(layer.cumulative.begin(), layer.cumulative.end(), std::greater<>());
  const double total = std::accumulate(layer.cumulative.begin(), layer.cumulative.end(), 0.0);
  double running = 0;
  for (double& value : layer.cumulative) {
    running += total > 0 ? value / total : 1.0 / static_cast<double>(layer.cumulative.size());
    value = running;
  }
  return layer;
}

int64_t evicted_at(const CumulativeImportance& layer, double p, int64_t protected_tokens) {
  const auto& cumulative = layer.cumulative;
  // First index whose share reaches p; that many tokens plus one are needed (the reference's searchsorted + 1).
  const auto needed = std::lower_bound(cumulative.begin(), cumulative.end(), p) - cumulative.begin() + 1;
  const auto tokens = static_cast<int64_t>(cumulative.size());
  return std::max<int64_t>(0, tokens - std::min<int64_t>(needed, tokens) - protected_tokens);
}

Allocation allocate_evictions(const std::vector<std::vector<double>>& importance, double evict_fraction,
                              int64_t protected_tokens) {
  if (importance.empty()) throw std::invalid_argument("allocate_evictions: no layers");
  if (evict_fraction < 0 || evict_fraction > 1)
    throw std::invalid_argument("allocate_evictions: fraction not in [0, 1]");
  std::vector<CumulativeImportance> layers;
  int64_t total_tokens = 0;
  std::vector<int64_t> capacity;  // most tokens each layer may evict
  for (const auto& scores : importance) {
    layers.push_back(cumulative_importance(scores));
    total_tokens += static_cast<int64_t>(scores.size());
    capacity.push_back(std::max<int64_t>(0, static_cast<int64_t>(scores.size()) - protected_tokens));
  }
  Allocation allocation;
  allocation.target = std::min<int64_t>(std::llround(evict_fraction * static_cast<double>(total_tokens)),
                                        std::accumulate(capacity.begin(), capacity.end(), int64_t{0}));
  auto total_at = [&](double p) {
    int64_t total = 0;
    for (const auto& layer : layers) total += evicted_at(layer, p, protected_tokens);
    return total;
  };
  // A higher threshold keeps more tokens; the evicted total falls as p rises.
  double low = 0, high = 1;
  for (int iteration = 0; iteration < 60; ++iteration) {
    const double middle = 0.5 * (low + high);
    (total_at(middle) > allocation.target ? low : high) = middle;
  }
  const int64_t below = total_at(low), above = total_at(high);
  allocation.threshold = std::llabs(below - allocation.target) <= std::llabs(above - allocation.target) ? low : high;

  std::vector<double> share(layers.size());
  double found = 0;
  for (size_t l = 0; l < layers.size(); ++l)
    found += share[l] = evicted_at(layers[l], allocation.threshold, protected_tokens);
  if (found <= 0) std::fill(share.begin(), share.end(), 1.0), found = static_cast<double>(layers.size());
  // Proportional rescaling to the exact target, capped per layer; what the caps and the rounding leave over is
  // handed out one token at a time to the layers with the largest remainders that still have room.
  std::vector<double> exact(layers.size());
  allocation.evicted.resize(layers.size());
  int64_t assigned = 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    exact[l] = std::min(static_cast<double>(capacity[l]), share[l] * static_cast<double>(allocation.target) / found);
    allocation.evicted[l] = static_cast<int64_t>(std::floor(exact[l]));
    assigned += allocation.evicted[l];
  }
  while (assigned < allocation.target) {
    size_t best = layers.size();
    double best_remainder = -1;
    for (size_t l = 0; l < layers.size(); ++l) {
      if (allocation.evicted[l] >= capacity[l]) continue;
      const double remainder = exact[l] - static_cast<double>(allocation.evicted[l]);
      if (remainder > best_remainder) best = l, best_remainder = remainder;
    }
    ++allocation.evicted[best];  // target <= Σ capacity, so some layer has room
    ++assigned;
  }
  return allocation;
}

}  // namespace kvforge::prefixkv
