#pragma once
// Matmul FLOPs of a forward pass (2 per multiply-add), the cost model behind time-to-first-token ratios: the linear
// layers per token, attention's scores and weighted values per visible key, the output head where logits are taken.
// Norms, RoPE and softmax are left out (a few percent at these shapes).
#include <cstdint>

#include "runtime/model_config.h"

namespace kvforge {

// `tokens` new tokens after `context` cached ones, causal (token i sees context + i + 1 keys, within the sliding
// window where a layer has one), with logits for `logit_tokens` of them.
double forward_flops(const ModelConfig& config, int64_t tokens, int64_t context, int64_t logit_tokens);

// Time to first token of an N-token prompt under KV Prediction: the auxiliary over N - 1 tokens (no logits), the
// predictors of every base layer's K and V over them, the base over the last token with N - 1 cached.
double kv_prediction_prefill_flops(const ModelConfig& base, const ModelConfig& auxiliary, int64_t prompt_tokens);

}  // namespace kvforge
