#include "trainers/cskv/fit.h"

#include "policies/cskv.h"
#include "runtime/input_error.h"
#include "trainers/cskv/factorization.h"

namespace kvforge::cskv {

Init parse_init(const std::string& text) {
  if (text == "svd") return Init::kSvd;
  if (text == "asvd") return Init::kAsvd;
  if (text == "whiten") return Init::kWhiten;
  fail_input("recipe", "init", "expected svd, asvd or whiten, got '" + text + "'");
}

const char* init_name(Init init) {
  switch (init) {
    case Init::kSvd:
      return "svd";
    case Init::kAsvd:
      return "asvd";
    case Init::kWhiten:
      return "whiten";
  }
  return "?";
}

std::vector<LowRankLayer> initial_factors(Transformer& model, const FitOptions& options,
                                          const InputStatistics& statistics) {
  std::vector<LowRankLayer> factors;
  for (int64_t l = 0; l < model->config.num_layers; ++l) {
    const auto& attention = model->model->layers[l]->as<DecoderLayer>()->self_attn;
    auto factorize = [&](const at::Tensor& weight, int64_t rank) {
      switch (options.init) {
        case Init::kSvd:
          return svd_factors(weight, rank);
        case Init::kAsvd:  // +1e-6 as the reference: a channel the text never moves keeps a finite scale
          return svd_factors(weight, rank, statistics.mean_abs.at(l) + 1e-6, options.asvd_alpha);
        case Init::kWhiten:
          return whitened_factors(weight, rank, statistics.second_moment.at(l));
      }
      return LowRankPair{};
    };
    const LowRankPair keys = factorize(attention->k_proj->weight.detach(), options.key_rank);
    const LowRankPair values = factorize(attention->v_proj->weight.detach(), options.value_rank);
    LowRankLayer layer{keys.down.set_requires_grad(true),
                       keys.up.set_requires_grad(true),
                       values.down.set_requires_grad(true),
                       values.up.set_requires_grad(true),
                       {},
                       {}};
    if (attention->k_proj->bias.defined()) layer.key_bias = attention->k_proj->bias.detach().to(at::kFloat);
    if (attention->v_proj->bias.defined()) layer.value_bias = attention->v_proj->bias.detach().to(at::kFloat);
    if (attention->k_norm) layer.key_norm = attention->k_norm->weight.detach().to(at::kFloat);  // the model's, frozen
    factors.push_back(std::move(layer));
  }
  return factors;
}

Artifact cskv_artifact(const std::vector<LowRankLayer>& factors, const FitOptions& options, const at::Tensor& errors,
                       const ModelConfig& config, const std::string& recipe, std::map<std::string, double> metrics) {
  Artifact artifact;
  artifact.method = kCskvMethod;
  artifact.model = ModelFingerprint::of(config);
  artifact.recipe = recipe;
  auto cpu = [](const at::Tensor& tensor) { return tensor.detach().to(at::kCPU, at::kFloat).contiguous(); };
  at::Tensor ranks = at::empty({static_cast<int64_t>(factors.size()), 2}, at::kLong);
  for (size_t l = 0; l < factors.size(); ++l) {
    const std::string prefix = "layers." + std::to_string(l) + ".";
    const LowRankLayer& layer = factors[l];
    artifact.tensors[prefix + "key_down"] = cpu(layer.key_down);
    artifact.tensors[prefix + "key_up"] = cpu(layer.key_up);
    artifact.tensors[prefix + "value_down"] = cpu(layer.value_down);
    artifact.tensors[prefix + "value_up"] = cpu(layer.value_up);
    if (layer.key_bias.defined()) artifact.tensors[prefix + "key_bias"] = cpu(layer.key_bias);
    if (layer.value_bias.defined()) artifact.tensors[prefix + "value_bias"] = cpu(layer.value_bias);
    if (layer.key_norm.defined()) artifact.tensors[prefix + "key_norm"] = cpu(layer.key_norm);
    ranks[static_cast<int64_t>(l)][0] = layer.key_down.size(0);
    ranks[static_cast<int64_t>(l)][1] = layer.value_down.size(0);
  }
  artifact.tensors["ranks"] = ranks;
  artifact.tensors["reconstruction_error"] = errors.to(at::kCPU, at::kDouble).contiguous();
  metrics["init"] = static_cast<double>(options.init);
  metrics["window"] = static_cast<double>(options.window);
  metrics["group"] = static_cast<double>(options.group);
  metrics["bits"] = static_cast<double>(options.bits);
  metrics["kept_fraction"] = cskv_kept_fraction(options.key_rank, options.value_rank, options.bits, options.group,
                                                config.num_kv_heads, config.head_dim);
  metrics["key_error"] = errors.select(1, 0).mean().item<double>();
  metrics["value_error"] = errors.select(1, 1).mean().item<double>();
  if (errors.size(1) > 2) metrics["key_score_error"] = errors.select(1, 2).mean().item<double>();
  artifact.metrics = std::move(metrics);
  return artifact;
}

}  // namespace kvforge::cskv
