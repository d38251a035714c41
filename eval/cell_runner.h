#pragma once
// How one policy's generation runs on a model: which model generates, the cache layout, and who reads the prompt.
// Eval's cells and `kvforge bench generate` run policies through it, so both measure the same path.
#include <memory>

#include "policies/policy.h"
#include "runtime/generate.h"
#include "runtime/linearized_attention.h"
#include "runtime/transformer.h"

namespace kvforge::eval {

struct CellRunner {
  Transformer model;                             // the base model, or KV Prediction's auxiliary on its own
  CacheFactory cache;                            // null: the generating model's full cache
  PromptPrefill prefill;                         // null: the generating model reads its prompt
  std::shared_ptr<Linearization> linearization;  // Lizard: attached to the model while the cell runs
};

// Attaches a runner's linearization (if any) to its model for one scope.
class AttachedLinearization {
 public:
  explicit AttachedLinearization(CellRunner& runner) : runner_(runner) {
    if (runner_.linearization) runner_.model->set_linearization(runner_.linearization.get());
  }
  ~AttachedLinearization() {
    if (runner_.linearization) runner_.model->set_linearization(nullptr);
  }
  AttachedLinearization(const AttachedLinearization&) = delete;
  AttachedLinearization& operator=(const AttachedLinearization&) = delete;

 private:
  CellRunner& runner_;
};

// The runner for `policy` (null: the full cache) at `prompt_tokens` (the length its budgets are planned for).
CellRunner cell_runner(const Transformer& model, const PolicySpec* policy, int64_t prompt_tokens);

}  // namespace kvforge::eval
