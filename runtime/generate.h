#pragma once
// Batched generation: left-padded prefill of prompts of different lengths, then one token per step
// per sequence from a KV cache, each sequence stopping on EOS, a stop string or the token limit.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/kv_cache.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"
#include "runtime/transformer.h"

namespace kvforge {

struct GenerationOptions {
  int64_t max_new_tokens = 32;
  SamplingOptions sampling;
  std::vector<int64_t> eos_token_ids;     // finishing tokens (kept in the output)
  std::vector<std::string> stop_strings;  // need a tokenizer; the text stops after the first match
  // Decode steps over fixed-shape buffers where the cache's layout allows (KVCache::begin_fixed_shape_decode), the same
  // logits as eager steps; with cuda_graph, on CUDA, replayed from one captured graph (runtime/decode_graph) instead of
  // the host launching every kernel of every step. Off by default until a GPU run has checked the graph path
  // (tests/test_decode_graph.cpp, DecodeGraph.*); `kvforge bench generate --cuda-graph 1` turns it on.
  bool fixed_shape_decode = false;
  bool cuda_graph = false;  // implies fixed_shape_decode
};

enum class FinishReason { kLength, kEos, kStopString };
const char* to_string(FinishReason reason);

struct GeneratedSequence {
  std::vector<int64_t> tokens;  // new tokens only
  FinishReason finish = FinishReason::kLength;
};

struct GenerationResult {
  std::vector<GeneratedSequence> sequences;
  double prefill_seconds = 0.0;     // until the first token of every sequence is chosen
  double decode_seconds = 0.0;      // the remaining steps
  int64_t decode_tokens = 0;        // tokens produced after the first, over all sequences
  int64_t peak_cache_bytes = 0;
  bool graph_decode = false;  // decode steps after the first replayed a captured CUDA graph
};

// Builds the KV cache for a batch; generate() calls it with (batch, capacity) so callers can swap layouts.
using CacheFactory = std::function<std::unique_ptr<KVCache>(int64_t batch, int64_t capacity)>;

// Reads a left-padded prompt batch into the cache and returns the last token's logits [batch, 1, vocab]; generate()'s
// default is one forward of the model (KV Prediction swaps in predicted_prefill).
using PromptPrefill = std::function<at::Tensor(const at::Tensor& ids, const at::Tensor& positions, KVCache& cache)>;

std::unique_ptr<KVCache> make_full_cache(const Transformer& model, int64_t batch, int64_t capacity);

// prompts: token ids (each non-empty). `tokenizer` may be null when there are no stop strings.
GenerationResult generate(Transformer& model, const std::vector<std::vector<int64_t>>& prompts,
                          const GenerationOptions& options, const Tokenizer* tokenizer = nullptr,
                          const CacheFactory& make_cache = nullptr, const PromptPrefill& prefill = nullptr);

}  // namespace kvforge
