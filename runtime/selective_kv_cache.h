#pragma once
// A KV cache that keeps a bounded set of tokens per layer and KV head: the first `sink_tokens`
// positions and the `recent_tokens` newest ones always, the rest by a score. It covers StreamingLLM
// (no score: sink + recent window), SnapKV and PyramidKV (scores from the prompt's last queries,
// pooled, chosen once after prefill, or at every step when they evict while decoding), H2O (attention
// accumulated over every step, evicted as it decodes), TOVA (the newest query's attention, averaged over the
// layer's heads, evicted as it decodes), Expected Attention (what future queries are expected to pay, chosen
// once after prefill) and PrefixKV (attention from every prompt query, one token set per layer, a budget that
// grows with the sequence). Each head may choose its own tokens, so positions are per head.
//
// Prefill attends over the whole prompt (as SnapKV, PyramidKV and H2O define it) except for streaming
// layers, whose prefill already uses the sink + window mask; eviction happens in after_attention, so
// between steps each layer holds at most budget_tokens slots per head (plus the tokens generated since,
// for layouts that only compress the prompt).
//
// Memory: the first prompt chunk is attended and scored where it lies (the step's own keys); only what survives its
// eviction is copied into per-layer buffers sized for the rest of the run (budget + 1 slots when every step evicts,
// else the kept prompt plus the tokens still to come). A decode step writes its token into the next free slot and,
// when one token must go, moves it into the evicted token's slot, per head: no step copies or regathers the cache,
// and slots are in position order only for the layouts that never evict during decode (PrefixKV's fixed-index rule
// needs that order and keeps it).
#include <ATen/ATen.h>

#include <vector>

#include "runtime/expected_attention.h"
#include "runtime/kv_cache.h"

namespace kvforge {

enum class TokenScore {
  kNone,                  // keep sink + recent only (StreamingLLM)
  kObservationWindow,     // SnapKV: attention from the last `observation_window` queries, pooled (while decoding
                          // too when evict_during_decode: the window then slides over the generated tokens)
  kAccumulatedAttention,  // H2O: attention received, summed over every query so far
  kPromptAttention,       // PrefixKV: attention received from every prompt query, chosen once after prefill
  kNewestQueryAttention,  // TOVA: attention from the step's newest query alone, scored afresh every step
  kExpectedAttention,     // Expected Attention: what the queries still to come are expected to pay, after prefill
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
  ExpectedAttentionOptions expected;  // kExpectedAttention (its sinks are also sink_tokens, kept)
};

class SelectiveKVCache : public KVCache {
 public:
  // `capacity`: prompt + new tokens per sequence, as generate() passes it, so the buffers are sized once; 0 = unknown
  // (they then grow by doubling). `inv_freq`: the model's RoPE frequencies, needed by kExpectedAttention only.
  SelectiveKVCache(std::vector<SelectiveLayerOptions> layers, int64_t batch, int64_t kv_heads, int64_t head_dim,
                   const at::TensorOptions& options, int64_t capacity = 0, at::Tensor inv_freq = at::Tensor());

  CachedKV update(int64_t layer, const at::Tensor& keys, const at::Tensor& values,
                  const at::Tensor& positions) override;
  void after_attention(int64_t layer, const at::Tensor& queries, const at::Tensor& positions) override;
  int64_t length(int64_t layer) const override { return layers_.at(layer).keys.size(2); }
  int64_t bytes() const override;
  // Fixed-shape decode once the prompt is in, where every layer either keeps its budget by evicting one token per
  // step (it already holds the budget: each step then appends into and evicts from the same slots) or keeps every
  // generated token without scoring it (each step writes at a device-side slot and the whole store is returned, the
  // slots still to come at position -1). PrefixKV's fixed-index rule and layers still below their budget decode as
  // before.
  bool begin_fixed_shape_decode(int64_t steps) override;
  void fixed_shape_step_done() override;
  // Slots `layer`'s buffers can hold before they must grow (0 before the prompt is in).
  int64_t slot_capacity(int64_t layer) const;

  // [batch, kv_heads, slots] positions held by `layer` (-1 = empty), for tests and inspection.
  const at::Tensor& positions(int64_t layer) const { return layers_.at(layer).positions; }

 private:
  struct Layer {
    SelectiveLayerOptions options;
    // What the layer holds now: the first `length` slots of the stores below, or, between the first prompt chunk's
    // update() and its after_attention(), that chunk itself (`pending`).
    at::Tensor keys;       // [batch, kv_heads, slots, head_dim]
    at::Tensor values;     // [batch, kv_heads, slots, head_dim]
    at::Tensor positions;  // [batch, kv_heads, slots] int64
    at::Tensor scores;     // [batch, kv_heads, slots] float32 (kAccumulatedAttention)
    at::Tensor key_store, value_store, position_store, score_store;  // [batch, kv_heads, capacity(, head_dim)]
    // kObservationWindow evicting while decoding: the newest `observation_window` queries, oldest first.
    at::Tensor window_queries;    // [batch, heads, window, head_dim]
    at::Tensor window_positions;  // [batch, window]
    int64_t length = 0;
    bool pending = false;
    bool prompt_done = false;
    int64_t prompt_tokens = 0;  // tokens of the first chunk
    int64_t prompt_kept = 0;    // slots held right after the prompt's eviction
    int64_t decode_tokens = 0;  // tokens added after the prompt
    at::Tensor next_slot;       // [1] int64 on the device: a growing layer's fixed-shape write slot (else undefined)
  };
  at::Tensor received(const Layer& layer, const at::Tensor& queries, const at::Tensor& query_positions) const;
  // SnapKV's votes from `queries`, averaged over `pool_kernel` neighbouring positions (slots need not be in order).
  at::Tensor pooled_votes(const Layer& layer, const at::Tensor& queries, const at::Tensor& query_positions) const;
  // Scores with the sink and recent tokens at +infinity and empty slots at -infinity: the lowest go first.
  at::Tensor ranking(const Layer& layer, const at::Tensor& token_scores) const;
  void evict(Layer& layer, const at::Tensor& token_scores);
  void evict_one_in_place(Layer& layer, const at::Tensor& token_scores);
  // StreamingLLM's layers: a decode token takes the displaced token's slot in update(), before it attends.
  static bool replaces_before_attention(const Layer& layer);
  void replace_oldest(Layer& layer, const at::Tensor& keys, const at::Tensor& values, const at::Tensor& positions);
  void evict_at_fixed_index(Layer& layer);
  // Makes the stores hold exactly these slots (copied), with room for `reserve` more.
  void store(Layer& layer, const at::Tensor& keys, const at::Tensor& values, const at::Tensor& positions,
             const at::Tensor& scores, int64_t reserve);
  void reserve(Layer& layer, int64_t slots);  // grows the stores (doubling) to hold `slots`
  void refresh_views(Layer& layer);
  // Slots a layer needs beside the `kept` it holds: up to budget + 1 when every step evicts, else the tokens to come.
  int64_t decode_room(const Layer& layer, int64_t kept) const;

  // How a layer's decode steps can run with fixed shapes, if at all (begin_fixed_shape_decode's two cases).
  enum class FixedShapeKind { kNone, kEvictingAtBudget, kGrowing };
  static FixedShapeKind fixed_shape_kind(const Layer& layer);

  std::vector<Layer> layers_;
  bool fixed_shape_ = false;
  int64_t capacity_ = 0;
  at::Tensor inv_freq_;
};

}  // namespace kvforge
