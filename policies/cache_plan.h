#pragma once
// What a policy decides for a model and a prompt length: the cache layout of every layer, with its
// budgets, windows, scoring and bits. The runtime builds the cache from it; eval never needs to know
// which policy produced it.
#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "runtime/kv_cache.h"
#include "runtime/kv_prediction.h"
#include "runtime/linearized_attention.h"
#include "runtime/low_rank_kv_cache.h"
#include "runtime/mixed_head_kv_cache.h"
#include "runtime/model_config.h"
#include "runtime/quantized_kv_cache.h"
#include "runtime/selective_kv_cache.h"

namespace kvforge {

enum class CacheLayout {
  kFull,        // every token of every head
  kSelective,   // a bounded token set per head: sink + recent + scored (streaming, SnapKV, PyramidKV, H2O)
  kQuantized,   // 2/4-bit codes with a full-precision recent window (KIVI)
  kMixedHeads,  // full and streaming (sink + recent) KV heads side by side (RLKV, DuoAttention)
  kLowRank,     // pre-RoPE low-rank latents beside an exact recent window (CSKV)
};

struct MixedHeadsPlan {
  std::vector<std::vector<bool>> streaming;  // [layer][kv_head]: true = sink + recent only
  int64_t sink_tokens = 16;
  int64_t recent_tokens = 64;
};

struct LowRankPlan {
  std::shared_ptr<const LowRankFactors> factors;
  LowRankCacheOptions options;
};

struct CachePlan {
  std::string policy;  // the label of the policy that made it
  CacheLayout layout = CacheLayout::kFull;
  std::vector<SelectiveLayerOptions> layers;  // kSelective: one per layer
  QuantizedCacheOptions quantization;         // kQuantized
  MixedHeadsPlan heads;                       // kMixedHeads
  LowRankPlan low_rank;                       // kLowRank
  // How the prompt reaches the cache: null = the model reads it; else KV Prediction's auxiliary model and predictors
  // fill it (or, with auxiliary_alone, the auxiliary model generates on its own: the baseline it is compared with).
  std::shared_ptr<const KvPredictionWeights> kv_prediction;
  bool auxiliary_alone = false;
  // Lizard / LoLCATs: the model's attention linearized, decoding from a constant-size state instead of a KV cache.
  std::shared_ptr<const Linearization> linearization;
};

// A cache for `batch` sequences of up to `capacity` tokens laid out as `plan` says.
std::unique_ptr<KVCache> make_cache(const CachePlan& plan, const ModelConfig& config, int64_t batch, int64_t capacity,
                                    const at::TensorOptions& options);

}  // namespace kvforge
