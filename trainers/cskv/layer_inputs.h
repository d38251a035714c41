#pragma once
// What CSKV's factors are fitted to: every layer's attention input (after the input norm) while the frozen model
// runs with its own, exact keys and values, so the layers are independent problems.
#include <ATen/ATen.h>

#include <functional>
#include <vector>

#include "runtime/transformer.h"
#include "trainers/task_batches.h"

namespace kvforge::cskv {

// [layer] -> [batch, tokens, hidden] in the model's dtype, without gradients. ids, positions: [batch, tokens].
std::vector<at::Tensor> attention_inputs(Transformer& model, const at::Tensor& ids, const at::Tensor& positions);

struct InputStatistics {
  std::vector<at::Tensor> mean_abs;       // [layer] -> [hidden] mean |x| per channel (ASVD's scale), float64
  std::vector<at::Tensor> second_moment;  // [layer] -> [hidden, hidden] E[x xᵀ] (whitening), when requested
  int64_t tokens = 0;
};

// Over `batches` calibration batches (padding excluded); batch(i) gives the i-th.
InputStatistics input_statistics(Transformer& model, const std::function<TokenBatch(int64_t)>& batch, int64_t batches,
                                 bool second_moment);

}  // namespace kvforge::cskv
