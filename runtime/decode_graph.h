#pragma once
// Decode steps over a fixed-shape cache (KVCache::begin_fixed_shape_decode), on CUDA captured once as a CUDA graph
// and replayed. An eager step launches every layer's kernels from the host, about 20 per layer, and the host waits
// for each step's token before it can launch the next, so at batch 1 the GPU idles for most of a step (Llama-3.1-8B
// at 32k reached a third of its bandwidth roofline). A replayed step is two small copies in, one graph launch, and
// the same logits: the graph runs the very kernels the eager step would, on the same buffers.
#include <ATen/ATen.h>

#include <memory>

#include "runtime/kv_cache.h"
#include "runtime/transformer.h"

namespace kvforge {

class FixedShapeDecode {
 public:
  // Null when the cache's layout cannot decode with fixed shapes (decode eagerly then). `capture`: replay a CUDA graph
  // where the model is on CUDA (else every step runs the fixed-shape forward eagerly, which is how the CPU checks the
  // layout). `steps`: the most steps that will be asked for.
  static std::unique_ptr<FixedShapeDecode> create(Transformer& model, KVCache& cache, int64_t batch, int64_t steps,
                                                  bool capture);
  virtual ~FixedShapeDecode() = default;
  // ids, positions: [batch, 1] int64 (positions -1 for finished rows). Returns the logits [batch, 1, vocab]; a
  // graph's are overwritten by the next step.
  virtual at::Tensor step(const at::Tensor& ids, const at::Tensor& positions) = 0;
  // Whether steps replay a captured graph (false until the first step has warmed up and captured it).
  virtual bool captured() const { return false; }
};

}  // namespace kvforge
