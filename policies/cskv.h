#pragma once
// CSKV (channel shrinking): the bi-branch low-rank cache with the factors `kvforge train` (method: cskv) fitted.
// The artifact holds, per layer l, "layers.l.key_down" A_K [key_rank, hidden], "layers.l.key_up" B_K
// [kv_heads·head_dim, key_rank], the same for values, the k/v projection biases when the model has them
// ("layers.l.key_bias", "layers.l.value_bias"), "ranks" [layers, 2] and "reconstruction_error" [layers, 3]
// (relative squared error of K after RoPE, of V, and of the attention scores q·k, on held-out text at export). Its
// metrics hold the window, group and bits it was trained for; the policy's parameters default to them and may override
// them.
#include <memory>
#include <string>

#include "policies/policy.h"
#include "runtime/low_rank_kv_cache.h"

namespace kvforge {

inline constexpr const char* kCskvMethod = "cskv";

CachePlan plan_cskv(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens);

// The factors and cache options a cskv spec asks for, checked together: an InputError naming `source` and the spec
// for bits other than 2/4/8/16, or latent ranks that packed codes cannot fill whole bytes with.
LowRankPlan cskv_low_rank_plan(const PolicySpec& spec, const std::string& source);

// The factors a CSKV artifact holds, checked against its model fingerprint (InputError naming the artifact
// and the tensor). Parsed once per artifact and shared.
std::shared_ptr<const LowRankFactors> cskv_factors(const std::shared_ptr<const Artifact>& artifact);

// A short description of the artifact deployed at `bits` with key groups of `group` tokens, for report labels:
// "asvd+train, 19% KV, 4-bit" (latent bytes per token against the full cache's, the exact window excluded).
std::string cskv_description(const Artifact& artifact, int64_t bits, int64_t group);

// Bytes per token of the latents (codes plus their fp16 scales and minimums at bits < 16) as a fraction of the
// full bf16/fp16 cache's, the exact window excluded.
double cskv_kept_fraction(int64_t key_rank, int64_t value_rank, int64_t bits, int64_t group, int64_t kv_heads,
                          int64_t head_dim);

}  // namespace kvforge
