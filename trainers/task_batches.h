#pragma once
// Training batches drawn from the synthetic task mixture. A micro-batch is a pure function of
// (seed, step, micro-batch index): which task, how long, and the sample itself, so resumed and
// data-parallel runs see exactly the batches of an uninterrupted single-process run.
#include <ATen/ATen.h>
#include <functional>
#include <string>
#include <vector>

#include "eval/tasks/task.h"
#include "runtime/tokenizer.h"

namespace kvforge {

struct TaskMixture {
  std::vector<std::string> tasks;  // names from tasks::task_names()
  std::vector<double> weights;     // same length as tasks (empty = uniform)
  int64_t min_tokens = 256;        // prompt length drawn uniformly in [min_tokens, max_tokens]
  int64_t max_tokens = 512;
  int64_t arithmetic_steps = 2;
  uint64_t seed = 0;
  bool loss_on_prompt = true;  // false: only the answer (target + EOS) is predicted
};

struct TokenBatch {
  at::Tensor input_ids;  // [batch, tokens] int64, right-padded
  at::Tensor positions;  // [batch, tokens] int64, -1 on padding
  at::Tensor labels;     // [batch, tokens] int64, next token or -100 where no loss is taken
  int64_t loss_tokens = 0;
  at::Tensor prompt_tokens;  // [batch] int64: each row's prompt length (task batches); undefined for document windows
};

// A micro-batch of text as a pure function of (seed, step, micro-batch): the task mixture or document windows.
using BatchSource = std::function<TokenBatch(uint64_t seed, int64_t step, int64_t micro_batch)>;

// Checks names and weights; an InputError names the recipe field.
void validate(const TaskMixture& mixture);

// `batch_size` samples of prompt + target + EOS.
TokenBatch make_task_batch(const TaskMixture& mixture, const Tokenizer& tokenizer, int64_t eos_id, int64_t pad_id,
                           int64_t step, int64_t micro_batch, int64_t batch_size);

// Mean cross-entropy over labelled tokens. logits: [batch, tokens, vocab].
at::Tensor next_token_loss(const at::Tensor& logits, const at::Tensor& labels);

// A well-mixed 64-bit hash of a few integers (SplitMix64 steps), for deterministic seeding.
uint64_t mix_seed(std::initializer_list<uint64_t> values);

}  // namespace kvforge
