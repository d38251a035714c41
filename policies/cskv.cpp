#include "policies/cskv.h"

#include <cmath>
#include <iomanip>
#include <sstream>

#include "policies/parsed_artifact.h"
#include "runtime/input_error.h"

namespace kvforge {
namespace {

const at::Tensor* find_tensor(const Artifact& artifact, const std::string& name) {
  auto found = artifact.tensors.find(name);
  return found == artifact.tensors.end() ? nullptr : &found->second;
}

// A [rows, columns] float tensor, rows or columns fixed by the model where given (-1 = any).
at::Tensor matrix(const Artifact& artifact, const std::string& name, int64_t rows, int64_t columns) {
  const at::Tensor* tensor = find_tensor(artifact, name);
  auto shape = [](int64_t size) { return size < 0 ? std::string("rank") : std::to_string(size); };
  if (tensor == nullptr || tensor->dim() != 2 || (rows >= 0 && tensor->size(0) != rows) ||
      (columns >= 0 && tensor->size(1) != columns) || !tensor->is_floating_point())
    fail_input(artifact.path, name, "expected a float tensor [" + shape(rows) + ", " + shape(columns) + "]");
  return tensor->to(at::kFloat);
}

double metric(const Artifact& artifact, const std::string& key, double fallback) {
  auto found = artifact.metrics.find(key);
  return found == artifact.metrics.end() ? fallback : found->second;
}

}  // namespace

std::shared_ptr<const LowRankFactors> cskv_factors(const std::shared_ptr<const Artifact>& artifact) {
  return parsed_once<LowRankFactors>(artifact, [&artifact] {
    const ModelFingerprint& model = artifact->model;
    const int64_t width = model.num_kv_heads * model.head_dim;
    std::vector<LowRankLayer> layers;
    for (int64_t l = 0; l < model.num_layers; ++l) {
      const std::string prefix = "layers." + std::to_string(l) + ".";
      LowRankLayer layer;
      layer.key_down = matrix(*artifact, prefix + "key_down", -1, model.hidden_size);
      layer.key_up = matrix(*artifact, prefix + "key_up", width, layer.key_down.size(0));
      layer.value_down = matrix(*artifact, prefix + "value_down", -1, model.hidden_size);
      layer.value_up = matrix(*artifact, prefix + "value_up", width, layer.value_down.size(0));
      for (auto [name, bias] : {std::pair{"key_bias", &layer.key_bias}, std::pair{"value_bias", &layer.value_bias}}) {
        const at::Tensor* tensor = find_tensor(*artifact, prefix + name);
        if (tensor == nullptr) continue;
        if (tensor->dim() != 1 || tensor->size(0) != width)
          fail_input(artifact->path, prefix + name, "expected a float tensor [" + std::to_string(width) + "]");
        *bias = tensor->to(at::kFloat);
      }
      if (const at::Tensor* norm = find_tensor(*artifact, prefix + "key_norm")) {
        if (norm->dim() != 1 || norm->size(0) != model.head_dim || !norm->is_floating_point())
          fail_input(artifact->path, prefix + "key_norm",
                     "expected a float tensor [" + std::to_string(model.head_dim) + "]");
        layer.key_norm = norm->to(at::kFloat);
      }
      layers.push_back(std::move(layer));
    }
    return std::make_shared<const LowRankFactors>(std::move(layers));
  });
}

double cskv_kept_fraction(int64_t key_rank, int64_t value_rank, int64_t bits, int64_t group, int64_t kv_heads,
                          int64_t head_dim) {
  const double full = 2.0 * 2 * static_cast<double>(kv_heads * head_dim);
  if (bits >= 16) return 2.0 * static_cast<double>(key_rank + value_rank) / full;
  // keys: a scale and a minimum (fp16) per channel per group; values: per token per KV head's latent run
  const double keys =
      static_cast<double>(key_rank) * (static_cast<double>(bits) / 8 + 4.0 / static_cast<double>(group));
  const double values =
      static_cast<double>(value_rank) * static_cast<double>(bits) / 8 + 4.0 * static_cast<double>(kv_heads);
  return (keys + values) / full;
}

std::string cskv_description(const Artifact& artifact, int64_t bits, int64_t group) {
  static const char* kInits[] = {"svd", "asvd", "whiten"};
  const auto init = static_cast<int64_t>(metric(artifact, "init", 0));
  const auto steps = static_cast<int64_t>(metric(artifact, "steps", 0));
  const at::Tensor* ranks = find_tensor(artifact, "ranks");
  double kept = 1;
  if (ranks != nullptr && ranks->dim() == 2 && ranks->size(1) == 2) {
    const at::Tensor mean = ranks->to(at::kDouble).mean(0);
    kept = cskv_kept_fraction(std::llround(mean[0].item<double>()), std::llround(mean[1].item<double>()), bits, group,
                              artifact.model.num_kv_heads, artifact.model.head_dim);
  }
  std::ostringstream out;
  const char* training = steps == 0 ? "" : metric(artifact, "score_loss", 0) != 0 ? "+train(scores)" : "+train";
  out << (init >= 0 && init < 3 ? kInits[init] : "?") << training << ", " << std::fixed << std::setprecision(0)
      << 100 * kept << "% KV";
  if (bits < 16) out << ", " << bits << "-bit";
  return out.str();
}

LowRankPlan cskv_low_rank_plan(const PolicySpec& spec, const std::string& source) {
  LowRankPlan plan;
  plan.factors = cskv_factors(spec.artifact);  // a malformed artifact fails here, naming the tensor
  plan.options.window = static_cast<int64_t>(spec.parameters.at("window"));
  plan.options.group = static_cast<int64_t>(spec.parameters.at("group"));
  plan.options.bits = static_cast<int64_t>(spec.parameters.at("bits"));
  const std::string problem = low_rank_options_problem(*plan.factors, plan.options, spec.artifact->model.num_kv_heads);
  if (!problem.empty()) fail_input(source, spec.label, problem);
  return plan;
}

CachePlan plan_cskv(const PolicySpec& spec, const ModelConfig& config, int64_t) {
  CachePlan plan{spec.label, CacheLayout::kLowRank, {}, {}};
  plan.low_rank = cskv_low_rank_plan(spec, "policy");
  plan.low_rank.options.key_norm_eps = config.rms_norm_eps;
  // Rebuilt keys must pass through the same per-head norm as the model's own (Qwen3's k_norm), and only then.
  const std::vector<LowRankLayer>& layers = plan.low_rank.factors->cpu();
  for (size_t l = 0; l < layers.size(); ++l)
    if (layers[l].key_norm.defined() != config.qk_norm)
      fail_input(spec.artifact->path, "layers." + std::to_string(l) + ".key_norm",
                 config.qk_norm
                     ? "missing: the model normalises its keys per head (k_norm), so the factors must carry it"
                     : "present, but the model has no per-head key norm");
  return plan;
}

}  // namespace kvforge
