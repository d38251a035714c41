#pragma once
// FlashInfer's batch decode as a baseline for `kvforge bench decode`, built only when CMake is given
// KVFORGE_FLASHINFER_DATA (flashinfer/data of the unpacked flashinfer-python wheel; README, "Decode kernel").
#include <ATen/ATen.h>

#include <memory>

namespace kvforge {

// FlashInfer's BatchDecodeWithPagedKVCache (the CUDA-core decode kernel its Python wrapper runs for grouped-query
// decode) planned once for a [batch, kv_heads, tokens, head_dim] bf16 cache, tokens a multiple of 16. The cache is
// read in place: 16-token pages whose page table walks this layout, so both kernels read the same bytes.
class FlashInferDecode {
 public:
  FlashInferDecode(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values, double scale);
  ~FlashInferDecode();
  FlashInferDecode(const FlashInferDecode&) = delete;
  FlashInferDecode& operator=(const FlashInferDecode&) = delete;

  void run(at::Tensor& out);  // out: [batch, heads, 1, head_dim] bf16

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace kvforge
