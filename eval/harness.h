#pragma once
// The benchmark harness behind `kvforge eval`: every policy runs on the same samples (drawn once per task
// and length), and each cell records accuracy, the KV bytes the caches really held, time to first token,
// decode speed and peak device memory, with its sample count.
#include <functional>
#include <string>
#include <vector>

#include "eval/report.h"
#include "eval/tasks/task.h"
#include "policies/policy.h"
#include "runtime/model_loader.h"

namespace kvforge {
class DataParallel;
}

namespace kvforge::eval {

struct EvalOptions {
  std::vector<PolicySpec> policies;  // "full" is measured first whether listed or not: it is the KV baseline
  std::vector<std::string> tasks;
  std::vector<int64_t> lengths;
  int64_t samples = 20;
  uint64_t seed = 1234;
  int64_t batch_size = 8;
  int64_t arithmetic_steps = 2;
  std::vector<std::string> perplexity_files;  // plain text (one document) or JSONL ({"text"} or {"prompt","answer"})
  int64_t perplexity_chunk = 64;              // tokens per forward when reading a document through a cache
  bool answer_perplexity = true;              // also measure each cell's teacher-forced answer perplexity
  bool beyond_context = false;                // allow prompts past max_position_embeddings (speed and memory runs)
};

// Checks tasks, lengths (against the task minimum and the model's context) and perplexity files before
// anything runs; errors name `source` (e.g. "--tasks") and the offending value.
void validate(const EvalOptions& options, const LoadedModel& model);

// Samples with their prompts and targets encoded once, so every policy's cell reuses the token ids.
struct EncodedSamples {
  std::vector<tasks::Sample> samples;
  std::vector<std::vector<int64_t>> prompts;  // prompt token ids, one per sample
  std::vector<std::vector<int64_t>> targets;  // each ideal completion's token ids
};
EncodedSamples encode_samples(const Tokenizer& tokenizer, std::vector<tasks::Sample> samples);

// One cell: the samples through the policy (nullptr = full cache) in batches, greedy, scored by task rule.
// With `answer_perplexity`, also the teacher-forced perplexity of the ideal completions: each prompt is
// prefilled through the policy's cache (so it compresses as it would), then the completion is read in one
// forward and scored token by token, PrefixKV's perplexity protocol.
// With `parallel`, batch b runs on rank b mod world size and every rank returns the whole cell: scores, KV bytes and
// perplexities equal one process's; times are each batch's on its own rank, peak memory the largest rank's.
CellResult evaluate_cell(Transformer& model, const Tokenizer& tokenizer, const std::vector<int64_t>& eos_token_ids,
                         const EncodedSamples& encoded, const PolicySpec* policy, int64_t batch_size,
                         bool answer_perplexity = false, DataParallel* parallel = nullptr);

// Mean negative log-likelihood per predicted token of `tokens`, fed through the policy's cache `chunk`
// tokens at a time (the full policy in one chunk equals an ordinary forward pass).
struct DocumentNll {
  double total_nll = 0;
  int64_t predicted = 0;
  int64_t peak_cache_bytes = 0;
};
DocumentNll document_nll(Transformer& model, const std::vector<int64_t>& tokens, const PolicySpec* policy,
                         int64_t chunk);

// Progress: called after each finished cell with (done, total, the cell).
using EvalProgress = std::function<void(int64_t done, int64_t total, const CellResult& cell)>;

// Under torchrun (`parallel`), each cell's batches and each perplexity file's documents are split over the ranks and
// every rank returns the same report.
EvalReport run_eval(LoadedModel& model, const EvalOptions& options, const EvalProgress& progress = nullptr,
                    DataParallel* parallel = nullptr);

}  // namespace kvforge::eval
