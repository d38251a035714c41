#pragma once
// A KV cache that keeps a bounded set of tokens per layer and KV head: the first `sink_tokens`
// positions and the `recent_tokens` newest ones always, the rest by a score. It covers StreamingLLM
// (no score: sink + recent window), SnapKV and PyramidKV (scores from the prompt's last queries,
// pooled, chosen once after prefill), H2O (attention accumulated over every step, evicted as it
// decodes) and PrefixKV (attention from every prompt query, one token set per layer, a budget that grows
// with the sequence). Each head may choose its own tokens, so positions are per head.
//
// Prefill attends over the whole prompt (as SnapKV, PyramidKV and H2O define it) except for streaming
// layers, whose prefill already uses the sink + window mask; eviction happens in after_attention, so
// between steps each layer holds at most budget_tokens slots per head (plus the tokens generated since,
// for layouts that only compress the prompt).
#include <ATen/ATen.h>

#include <vector>

#include "runtime/kv_cache.h"

namespace kvforge {

enum class TokenScore {
  kNone,                  // keep sink + recent only (StreamingLLM)
  kObservationWindow,     // SnapKV: attention from the last `observation_window` queries, pooled
  kAccumulatedAttention,  // H2O: attention received, summed over every query so far
  kPromptAttention,       // PrefixKV: attention received from every prompt query, chosen once after prefill
};

struct SelectiveLayerOptions {
  int64_t budget_tokens = 0;  // slots kept per head after eviction (sink and recent included)
  int64_t sink_tokens = 0;
  int64_t recent_tokens = 0;
  TokenScore score = TokenScore::kNone;
  int64_t observation_window = 0;   // kObservationWindow
  int64_t pool_kernel = 1;          // kObservationWindow: odd width of the average pooling over slots
  bool evict_during_decode = true;  // false: the budget applies to the prompt, generated tokens are added
  bool streaming_mask = false;      // attend as StreamingLLM does (sink + window) also within a step
  bool shared_selection = false;    // every KV head keeps the same tokens (scores averaged over heads)
  // PrefixKV's decode rule (from Elastic Cache): when > 0, after each decode step the layer holds at most
  // (slots kept after prefill) + ceil(decode_keep_fraction × tokens generated) slots; each excess slot is
  // removed at one fixed index, set after prefill to (slots kept − decode_protected_tokens), so the newest
  // tokens are never dropped. Exclusive with evict_during_decode.
  double decode_keep_fraction = 0;
  int64_t decode_protected_tokens = 25;
};

class SelectiveKVCache : public KVCache {
 public:
  SelectiveKVCache(std::vector<SelectiveLayerOptions> layers, int64_t batch, int64_t kv_heads, int64_t head_dim,
                   const at::TensorOptions& options);

  CachedKV update(int64_t layer, const at::Tensor& keys, const at::Tensor& values,
                  const at::Tensor& positions) override;
  void after_attention(int64_t layer, const at::Tensor& queries, const at::Tensor& positions) override;
  int64_t length(int64_t layer) const override { return layers_.at(layer).keys.size(2); }
  int64_t bytes() const override;

  // [batch, kv_heads, slots] positions held by `layer` (-1 = empty), for tests and inspection.
  const at::Tensor& positions(int64_t layer) const { return layers_.at(layer).positions; }

 private:
  struct Layer {
    SelectiveLayerOptions options;
    at::Tensor keys;       // [batch, kv_heads, slots, head_dim]
    at::Tensor values;     // [batch, kv_heads, slots, head_dim]
    at::Tensor positions;  // [batch, kv_heads, slots] int64
    at::Tensor scores;     // [batch, kv_heads, slots] float32 (kAccumulatedAttention)
    bool prompt_done = false;
    int64_t prompt_kept = 0;    // slots held right after the prompt's eviction
    int64_t decode_tokens = 0;  // tokens added after the prompt
  };
  at::Tensor received(const Layer& layer, const at::Tensor& queries, const at::Tensor& query_positions) const;
  void evict(Layer& layer, const at::Tensor& token_scores);
  void evict_at_fixed_index(Layer& layer);

  std::vector<Layer> layers_;
};

}  // namespace kvforge
