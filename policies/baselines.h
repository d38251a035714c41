#pragma once
// The training-free baseline policies. Each turns a spec (parameters already validated and defaulted by
// the registry) into a plan for one model and prompt length.
#include "policies/policy.h"

namespace kvforge {

// StreamingLLM (Xiao et al.): attention sinks plus a recent window, within the prompt too.
CachePlan plan_streaming(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens);
// SnapKV (Li et al.): after prefill each KV head keeps the prompt tokens its observation window (the
// prompt's last queries) attended to most, pooled; generated tokens are all kept.
CachePlan plan_snapkv(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens);
// PyramidKV (Cai et al.): SnapKV selection with budgets falling linearly from the first layer to the last,
// averaging the given budget.
CachePlan plan_pyramidkv(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens);
// H2O (Zhang et al.): heavy hitters by accumulated attention plus a recent window, evicting as it decodes.
CachePlan plan_h2o(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens);
// TOVA (Oren et al.): the layer keeps the tokens its newest query attends to most, averaged over the layer's heads;
// one token set per layer, re-chosen at every step, prompt and decode alike.
CachePlan plan_tova(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens);
// Expected Attention (Devoto et al., kvpress): after prefill each KV head keeps the tokens the queries still to come
// are expected to attend to most (runtime/expected_attention.h), the first `sink` tokens always.
CachePlan plan_expected_attention(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens);
// KIVI (Liu et al.): keys per channel, values per token, 2 or 4 bits, a full-precision recent window.
CachePlan plan_kivi(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens);

}  // namespace kvforge
