#include "policies/heads.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "runtime/input_error.h"

namespace kvforge {
namespace {

CachePlan mixed_plan(const PolicySpec& spec, std::vector<std::vector<bool>> streaming) {
  CachePlan plan{spec.label, CacheLayout::kMixedHeads, {}, {}, {}};
  plan.heads.streaming = std::move(streaming);
  plan.heads.sink_tokens = static_cast<int64_t>(spec.parameters.at("sink"));
  plan.heads.recent_tokens = static_cast<int64_t>(spec.parameters.at("recent"));
  return plan;
}

int64_t compressed_count(double sparsity, int64_t heads) {
  return std::min<int64_t>(heads, std::llround(sparsity * static_cast<double>(heads)));
}

}  // namespace

std::vector<std::vector<bool>> streaming_heads_by_gate(const at::Tensor& gates, double sparsity) {
  at::Tensor clipped = gates.to(at::kDouble).clamp(0, 1).contiguous();
  const int64_t layers = clipped.size(0), heads = clipped.size(1), total = layers * heads;
  const double* values = clipped.data_ptr<double>();
  std::vector<int64_t> order(total);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return values[a] < values[b]; });
  std::vector<std::vector<bool>> streaming(layers, std::vector<bool>(heads, false));
  for (int64_t i = 0; i < compressed_count(sparsity, total); ++i) streaming[order[i] / heads][order[i] % heads] = true;
  return streaming;
}

CachePlan plan_learned_heads(const PolicySpec& spec, const ModelConfig&, int64_t) {
  return mixed_plan(spec, streaming_heads_by_gate(spec.artifact->tensors.at("gates"), spec.parameters.at("sparsity")));
}

CachePlan plan_random_heads(const PolicySpec& spec, const ModelConfig& config, int64_t) {
  std::mt19937_64 rng(static_cast<uint64_t>(spec.parameters.at("seed")));
  const double sparsity = spec.parameters.at("sparsity");
  const int64_t layers = config.num_layers, heads = config.num_kv_heads;
  std::vector<std::vector<bool>> streaming(layers, std::vector<bool>(heads, false));
  if (spec.parameters.at("per_layer") != 0) {  // the same count in every layer, which ones at random
    for (auto& layer : streaming) {
      std::vector<int64_t> order(heads);
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), rng);
      for (int64_t i = 0; i < compressed_count(sparsity, heads); ++i) layer[order[i]] = true;
    }
  } else {
    std::vector<int64_t> order(layers * heads);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    for (int64_t i = 0; i < compressed_count(sparsity, layers * heads); ++i)
      streaming[order[i] / heads][order[i] % heads] = true;
  }
  return mixed_plan(spec, streaming);
}

}  // namespace kvforge
