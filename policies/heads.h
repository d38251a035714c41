#pragma once
// Head policies: some KV heads keep every token, the rest only sink + recent (RLKV, DuoAttention). Learned
// gates come from an artifact (method "rlkv" from the RL objective or RLKV's `adapter_weights.tsv`, "duo" from
// distillation or a DuoAttention `full_attention_heads.tsv`: see peer_artifacts.h); the training-free baselines choose
// heads at random, over the whole model or the same count in every layer. Sparsity counts KV heads: 0.5 of 112 heads
// streams exactly 56.
#include <string>
#include <vector>

#include "policies/policy.h"

namespace kvforge {

inline constexpr const char* kRlkvMethod = "rlkv";
inline constexpr const char* kDuoMethod = "duo";

// [layer][head] true = streaming: the round(sparsity × heads) lowest gates (ties: the lower index first),
// gates clipped to [0, 1] first as DuoAttention loads them. gates: [layers, kv_heads].
std::vector<std::vector<bool>> streaming_heads_by_gate(const at::Tensor& gates, double sparsity);

CachePlan plan_learned_heads(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens);
CachePlan plan_random_heads(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens);

}  // namespace kvforge
