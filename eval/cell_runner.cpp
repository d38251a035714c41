#include "eval/cell_runner.h"

#include "runtime/kv_prediction.h"

namespace kvforge::eval {

CellRunner cell_runner(const Transformer& model, const PolicySpec* policy, int64_t prompt_tokens) {
  CellRunner runner{model, nullptr, nullptr, nullptr};
  if (policy == nullptr) return runner;
  const ModelConfig config = model->config;
  const CachePlan plan = plan_cache(*policy, config, prompt_tokens);
  const at::TensorOptions options = model->output_weight().options();
  if (plan.kv_prediction) {
    KvPredictor predictor = plan.kv_prediction->on(options);
    if (plan.auxiliary_alone) {
      runner.model = predictor->auxiliary;
    } else {
      runner.prefill = [base = model, predictor](const at::Tensor& ids, const at::Tensor& positions,
                                                 KVCache& cache) mutable {
        return predicted_prefill(base, predictor, ids, positions, cache);
      };
    }
    return runner;
  }
  if (plan.linearization) {
    // Adapters fold into the projections once here: generation then runs one matmul per projection, not three.
    const Linearization& trained = *plan.linearization;
    runner.linearization = std::make_shared<Linearization>(trained.config.lora.rank > 0 && !trained.config.lora.merged
                                                               ? trained.merged(attention_weights(model)).on(options)
                                                               : trained.on(options));
    const LinearizationConfig linearized = runner.linearization->config;
    runner.cache = [linearized, layers = config.num_layers](int64_t, int64_t) {
      return std::make_unique<LinearizedCache>(linearized, layers);
    };
    return runner;
  }
  runner.cache = [plan, config, options](int64_t batch, int64_t capacity) {
    return make_cache(plan, config, batch, capacity, options);
  };
  return runner;
}

}  // namespace kvforge::eval
