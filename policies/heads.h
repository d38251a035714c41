#pragma once
// Head policies: some KV heads keep every token, the rest only sink + recent (RLKV, DuoAttention). Learned
// gates come from an artifact (method "rlkv" from the RL objective, "duo" from distillation or a DuoAttention
// `full_attention_heads.tsv`); the training-free baselines choose heads at random, over the whole model or the
// same count in every layer. Sparsity counts KV heads: 0.5 of 112 heads streams exactly 56.
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

// DuoAttention's format: one row per layer, one tab-separated gate per KV head.
std::string gates_to_tsv(const at::Tensor& gates);
// Reads a TSV written by gates_to_tsv or DuoAttention into an artifact of method "duo" for `config`'s model;
// InputError naming the file, the line and what was expected (the row count is the layer count, each row
// the KV head count, every value a number).
Artifact read_gates_tsv(const std::string& path, const ModelConfig& config);

}  // namespace kvforge
