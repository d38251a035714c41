#include <ATen/cuda/CUDAContext.h>

#include <flashinfer/attention/decode.cuh>
#include <flashinfer/attention/default_decode_params.cuh>
#include <flashinfer/attention/scheduler.cuh>
#include <flashinfer/attention/variants.cuh>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/flashinfer_decode.h"

namespace kvforge {
namespace {

using Params = flashinfer::BatchDecodeParams<__nv_bfloat16, __nv_bfloat16, __nv_bfloat16, int32_t>;
using Variant = flashinfer::DefaultAttention</*custom_mask=*/false, /*sliding_window=*/false, /*soft_cap=*/false,
                                             /*alibi=*/false>;
constexpr uint32_t kPageSize = 16;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("FlashInfer ") + what + ": " + cudaGetErrorString(status));
}

// Calls f with the head_dim and query group as compile-time constants.
template <typename F>
void dispatch(int64_t head_dim, int64_t group, F&& f) {
  auto by_group = [&](auto dim) {
    DISPATCH_GQA_GROUP_SIZE(group, GROUP, { f(dim, std::integral_constant<uint32_t, GROUP>{}); });
  };
  if (head_dim == 64) return by_group(std::integral_constant<uint32_t, 64>{});
  if (head_dim == 128) return by_group(std::integral_constant<uint32_t, 128>{});
  throw std::invalid_argument("FlashInfer bench: head_dim 64 or 128");
}

}  // namespace

struct FlashInferDecode::State {
  at::Tensor q, keys, values;
  at::Tensor indices, indptr, last_page_len;  // int32 page table on the GPU
  at::Tensor float_workspace, int_workspace, pinned_workspace;
  flashinfer::DecodePlanInfo plan;
  Params params;
  int64_t head_dim = 0, group = 0;
};

FlashInferDecode::FlashInferDecode(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values, double scale)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  const int64_t batch = keys.size(0), kv_heads = keys.size(1), tokens = keys.size(2), head_dim = keys.size(3);
  if (tokens % kPageSize != 0 || !keys.is_contiguous() || !values.is_contiguous() || !q.is_contiguous())
    throw std::invalid_argument("FlashInfer bench: contiguous tensors and tokens a multiple of 16");
  s.q = q;
  s.keys = keys;
  s.values = values;
  s.head_dim = head_dim;
  s.group = q.size(1) / kv_heads;
  // Page (b, p) holds tokens 16p .. 16p + 15 of sequence b: with a page stride of 16 rows, its id is the sequence's
  // offset in pages plus p, and the head stride is the layout's own.
  const int64_t pages = tokens / kPageSize, sequence_pages = kv_heads * pages;
  std::vector<int32_t> indices, indptr{0}, last(batch, kPageSize);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t p = 0; p < pages; ++p) indices.push_back(static_cast<int32_t>(b * sequence_pages + p));
    indptr.push_back(static_cast<int32_t>(indices.size()));
  }
  const auto ints = at::TensorOptions().dtype(at::kInt);
  s.indices = at::tensor(indices, ints).to(q.device());
  s.indptr = at::tensor(indptr, ints).to(q.device());
  s.last_page_len = at::tensor(last, ints).to(q.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(q.device().index());
  dispatch(head_dim, s.group, [&](auto dim, auto group) {
    constexpr uint32_t kDim = decltype(dim)::value, kGroup = decltype(group)::value;
    auto estimate = flashinfer::BatchDecodeWithPagedKVCacheWorkEstimationDispatched<
        kGroup, kDim, flashinfer::PosEncodingMode::kNone, Variant, Params>;
    size_t float_bytes = 0, int_bytes = 0;
    check(flashinfer::DecodePlanWorkspaceSize<kDim, flashinfer::PosEncodingMode::kNone, Variant, Params>(
              float_bytes, int_bytes, indptr.data(), static_cast<uint32_t>(batch), static_cast<uint32_t>(q.size(1)),
              kPageSize, /*enable_cuda_graph=*/false, stream, estimate),
          "workspace size");
    s.float_workspace = at::empty({static_cast<int64_t>(float_bytes) + 256}, q.options().dtype(at::kByte));
    s.int_workspace = at::empty({static_cast<int64_t>(int_bytes) + 256}, q.options().dtype(at::kByte));
    s.pinned_workspace =
        at::empty({static_cast<int64_t>(int_bytes) + 256}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
    check(flashinfer::DecodePlan<kDim, flashinfer::PosEncodingMode::kNone, Variant, Params>(
              s.float_workspace.data_ptr(), s.float_workspace.numel(), s.int_workspace.data_ptr(),
              s.pinned_workspace.data_ptr(), s.int_workspace.numel(), s.plan, indptr.data(),
              static_cast<uint32_t>(batch), static_cast<uint32_t>(q.size(1)), kPageSize, false, stream, estimate),
          "plan");
  });
  const int64_t strides[4] = {static_cast<int64_t>(kPageSize) * head_dim, tokens * head_dim, head_dim, 1};
  auto* k = reinterpret_cast<__nv_bfloat16*>(keys.data_ptr());
  auto* v = reinterpret_cast<__nv_bfloat16*>(values.data_ptr());
  s.params.paged_kv = flashinfer::paged_kv_t<__nv_bfloat16, int32_t>(
      static_cast<uint32_t>(kv_heads), kPageSize, static_cast<uint32_t>(head_dim), static_cast<uint32_t>(batch),
      flashinfer::QKVLayout::kHND, k, v, strides, s.indices.data_ptr<int32_t>(), s.indptr.data_ptr<int32_t>(),
      s.last_page_len.data_ptr<int32_t>());
  s.params.q = reinterpret_cast<__nv_bfloat16*>(q.data_ptr());
  s.params.num_qo_heads = static_cast<uint32_t>(q.size(1));
  s.params.q_stride_n = static_cast<int32_t>(q.stride(0));
  s.params.q_stride_h = static_cast<int32_t>(q.stride(1));
  s.params.window_left = -1;
  s.params.sm_scale = static_cast<float>(scale);
  s.params.rope_rcp_scale = 1.f;
  s.params.rope_rcp_theta = 1.f;
  auto* int_base = s.int_workspace.data_ptr();
  s.params.request_indices = flashinfer::GetPtrFromBaseOffset<int32_t>(int_base, s.plan.request_indices_offset);
  s.params.kv_tile_indices = flashinfer::GetPtrFromBaseOffset<int32_t>(int_base, s.plan.kv_tile_indices_offset);
  s.params.o_indptr = flashinfer::GetPtrFromBaseOffset<int32_t>(int_base, s.plan.o_indptr_offset);
  s.params.kv_chunk_size_ptr = flashinfer::GetPtrFromBaseOffset<int32_t>(int_base, s.plan.kv_chunk_size_ptr_offset);
  s.params.partition_kv = s.plan.split_kv;
  s.params.padded_batch_size = static_cast<uint32_t>(s.plan.padded_batch_size);
}

FlashInferDecode::~FlashInferDecode() = default;

void FlashInferDecode::run(at::Tensor& out) {
  State& s = *state_;
  s.params.o = reinterpret_cast<__nv_bfloat16*>(out.data_ptr());
  __nv_bfloat16* tmp_v = nullptr;
  float* tmp_s = nullptr;
  if (s.plan.split_kv) {
    tmp_v = flashinfer::GetPtrFromBaseOffset<__nv_bfloat16>(s.float_workspace.data_ptr(), s.plan.v_offset);
    tmp_s = flashinfer::GetPtrFromBaseOffset<float>(s.float_workspace.data_ptr(), s.plan.s_offset);
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(out.device().index());
  dispatch(s.head_dim, s.group, [&](auto dim, auto) {
    constexpr uint32_t kDim = decltype(dim)::value;
    check(flashinfer::BatchDecodeWithPagedKVCacheDispatched<kDim, flashinfer::PosEncodingMode::kNone, Variant>(
              s.params, tmp_v, tmp_s, /*enable_pdl=*/false, stream),
          "decode");
  });
}

}  // namespace kvforge
