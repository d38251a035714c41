#include "runtime/decode_graph.h"

#include <stdexcept>

#ifdef KVFORGE_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace kvforge {
namespace {

// Counts the steps against the most the cache was readied for (a step past them would write outside its buffers).
class StepBudget {
 public:
  explicit StepBudget(int64_t steps) : left_(steps) {}
  void take() {
    if (left_-- <= 0) throw std::logic_error("FixedShapeDecode: more steps than the cache was readied for");
  }

 private:
  int64_t left_;
};

class EagerFixedShapeDecode : public FixedShapeDecode {
 public:
  EagerFixedShapeDecode(Transformer& model, KVCache& cache, int64_t steps)
      : model_(model), cache_(cache), budget_(steps) {}

  at::Tensor step(const at::Tensor& ids, const at::Tensor& positions) override {
    budget_.take();
    const at::Device device = model_->output_weight().device();
    at::Tensor logits = model_->forward(ids.to(device), positions.to(device), &cache_, /*last_only=*/true);
    cache_.fixed_shape_step_done();
    return logits;
  }

 private:
  Transformer model_;
  KVCache& cache_;
  StepBudget budget_;
};

#ifdef KVFORGE_HAVE_CUDA
class GraphDecode : public FixedShapeDecode {
 public:
  GraphDecode(Transformer& model, KVCache& cache, int64_t batch, int64_t steps)
      : model_(model),
        cache_(cache),
        budget_(steps),
        side_stream_(at::cuda::getStreamFromPool(/*isHighPriority=*/false, model->output_weight().device().index())) {
    const at::TensorOptions ids = at::TensorOptions().device(model->output_weight().device()).dtype(at::kLong);
    ids_ = at::zeros({batch, 1}, ids);
    positions_ = at::full({batch, 1}, -1, ids);
  }

  at::Tensor step(const at::Tensor& ids, const at::Tensor& positions) override {
    budget_.take();
    ids_.copy_(ids);
    positions_.copy_(positions);
    at::Tensor logits;
    if (captured_) {
      graph_.replay();  // on the current stream, after the copies
      logits = logits_;
    } else {
      logits = warm_up_and_capture();
    }
    cache_.fixed_shape_step_done();
    return logits;
  }

  bool captured() const override { return captured_; }

 private:
  // The first step runs eagerly on a side stream (capture needs one that is not the default stream): it creates that
  // stream's cuBLAS workspace and every buffer the step allocates before capture, so the capture records kernels only.
  // The capture itself runs nothing; its logits buffer is what every replay writes.
  at::Tensor warm_up_and_capture() {
    const at::cuda::CUDAStream current = at::cuda::getCurrentCUDAStream(ids_.device().index());
    at::cuda::CUDAEvent inputs_ready;
    inputs_ready.record(current);
    inputs_ready.block(side_stream_);
    at::Tensor logits;
    {
      const c10::cuda::CUDAStreamGuard on_side(side_stream_);
      logits = model_->forward(ids_, positions_, &cache_, /*last_only=*/true);
      graph_.capture_begin();
      logits_ = model_->forward(ids_, positions_, &cache_, /*last_only=*/true);
      graph_.capture_end();
    }
    at::cuda::CUDAEvent side_done;
    side_done.record(side_stream_);
    side_done.block(current);
    logits.record_stream(current);
    captured_ = true;
    return logits;
  }

  Transformer model_;
  KVCache& cache_;
  StepBudget budget_;
  at::cuda::CUDAStream side_stream_;
  at::cuda::CUDAGraph graph_;
  at::Tensor ids_, positions_, logits_;  // the graph's inputs and output
  bool captured_ = false;
};
#endif

}  // namespace

std::unique_ptr<FixedShapeDecode> FixedShapeDecode::create(Transformer& model, KVCache& cache, int64_t batch,
                                                           int64_t steps, bool capture) {
  if (steps < 1 || !cache.begin_fixed_shape_decode(steps)) return nullptr;
#ifdef KVFORGE_HAVE_CUDA
  if (capture && model->output_weight().is_cuda()) return std::make_unique<GraphDecode>(model, cache, batch, steps);
#else
  (void)capture, (void)batch;
#endif
  return std::make_unique<EagerFixedShapeDecode>(model, cache, steps);
}

}  // namespace kvforge
