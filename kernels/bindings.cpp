#include "kernels/bindings.h"

#include <ATen/core/grad_mode.h>
#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/decode_attention.h"
#include "kernels/rms_norm.h"

#ifdef KVFORGE_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace kvforge::kernels {

bool rms_norm_supported(const at::Tensor& x, const at::Tensor& weight) {
#ifdef KVFORGE_HAVE_CUDA
  const bool needs_grad = at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad());
  const auto dtype = x.scalar_type();
  return !needs_grad && x.is_cuda() && weight.device() == x.device() && x.is_contiguous() &&
         weight.is_contiguous() && (dtype == at::kFloat || dtype == at::kBFloat16) &&
         weight.scalar_type() == dtype && weight.dim() == 1 && x.dim() >= 1 && weight.size(0) == x.size(-1);
#else
  return false;
#endif
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (!rms_norm_supported(x, weight)) throw std::invalid_argument("kernels::rms_norm: unsupported tensors");
#ifdef KVFORGE_HAVE_CUDA
  at::Tensor out = at::empty_like(x);
  const int64_t dim = x.size(-1), rows = x.numel() / dim;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream(x.device().index());
  cudaError_t status = x.scalar_type() == at::kFloat
      ? launch_rms_norm_f32(x.data_ptr<float>(), weight.data_ptr<float>(), out.data_ptr<float>(), rows, dim,
                            static_cast<float>(eps), stream)
      : launch_rms_norm_bf16(reinterpret_cast<const uint16_t*>(x.data_ptr()),
                             reinterpret_cast<const uint16_t*>(weight.data_ptr()),
                             reinterpret_cast<uint16_t*>(out.data_ptr()), rows, dim, static_cast<float>(eps), stream);
  if (status != cudaSuccess) throw std::runtime_error(std::string("rms_norm launch failed: ") + cudaGetErrorString(status));
  return out;
#else
  return x;
#endif
}

at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor x64 = x.detach().to(at::kCPU, at::kDouble).contiguous();
  at::Tensor w64 = weight.detach().to(at::kCPU, at::kDouble).contiguous();
  at::Tensor out = at::empty_like(x64);
  const int64_t dim = x64.size(-1);
  kvforge::kernels::rms_norm_reference(x64.data_ptr<double>(), w64.data_ptr<double>(), out.data_ptr<double>(),
                                       x64.numel() / dim, dim, eps);
  return out;
}

namespace {

DecodeAttentionShape decode_shape(const at::Tensor& q, const at::Tensor& k) {
  DecodeAttentionShape shape;
  shape.batch = q.size(0);
  shape.heads = q.size(1);
  shape.kv_heads = k.size(1);
  shape.head_dim = q.size(3);
  shape.slots = k.size(2);
  return shape;
}

}  // namespace

bool decode_attention_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& positions) {
#ifdef KVFORGE_HAVE_CUDA
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4 || q.size(2) != 1) return false;
  if (positions.dim() != 2 && !(positions.dim() == 3 && positions.size(1) == k.size(1))) return false;
  const bool needs_grad = at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  const int64_t head_dim = q.size(3);
  auto aligned = [](const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; };
  auto rows_contiguous = [&](const at::Tensor& t) {
    return t.stride(3) == 1 && t.stride(2) == head_dim && t.stride(1) % 8 == 0 && t.stride(0) % 8 == 0;
  };
  return !needs_grad && q.is_cuda() && k.device() == q.device() && v.device() == q.device() &&
         positions.device() == q.device() && q.scalar_type() == at::kBFloat16 && k.scalar_type() == at::kBFloat16 &&
         v.scalar_type() == at::kBFloat16 && positions.scalar_type() == at::kLong && q.is_contiguous() &&
         k.sizes() == v.sizes() && k.strides() == v.strides() && k.size(0) == q.size(0) && k.size(3) == head_dim &&
         q.size(1) % k.size(1) == 0 && decode_attention_supported(head_dim, q.size(1) / k.size(1)) &&
         rows_contiguous(k) && aligned(k) && aligned(v) && aligned(q) && positions.size(0) == q.size(0) &&
         positions.size(-1) == k.size(2) && positions.stride(-1) == 1;
#else
  (void)q, (void)k, (void)v, (void)positions;
  return false;
#endif
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& positions,
                            double scale, const DecodeMaskWindow& window, at::Tensor out, int64_t splits) {
  if (!decode_attention_supported(q, k, v, positions))
    throw std::invalid_argument("kernels::decode_attention: unsupported tensors");
#ifdef KVFORGE_HAVE_CUDA
  if (!out.defined()) out = at::empty_like(q);
  const DecodeAttentionShape shape = decode_shape(q, k);
  const int device = q.device().index();
  DecodeAttentionParams params;
  params.shape = shape;
  params.splits = splits > 0 ? static_cast<int>(std::min(splits, shape.slots))
                             : decode_attention_splits(shape, at::cuda::getDeviceProperties(device)->multiProcessorCount);
  at::Tensor workspace =
      at::empty({decode_attention_workspace_floats(shape, params.splits)}, q.options().dtype(at::kFloat));
  params.q = reinterpret_cast<const uint16_t*>(q.data_ptr());
  params.k = reinterpret_cast<const uint16_t*>(k.data_ptr());
  params.v = reinterpret_cast<const uint16_t*>(v.data_ptr());
  params.batch_stride = k.stride(0);
  params.head_stride = k.stride(1);
  params.positions = positions.data_ptr<int64_t>();
  params.positions_stride = positions.stride(0);
  params.positions_head_stride = positions.dim() == 3 ? positions.stride(1) : 0;
  at::Tensor query_positions;
  if (window.window > 0) {
    query_positions = window.query_positions.to(q.device(), at::kLong).contiguous();
    if (query_positions.numel() != shape.batch)
      throw std::invalid_argument("kernels::decode_attention: query_positions must hold one position per sequence");
    params.query_positions = query_positions.data_ptr<int64_t>();
    params.window = DecodeWindow{window.sink, window.window};
  }
  params.out = reinterpret_cast<uint16_t*>(out.data_ptr());
  params.scale = static_cast<float>(scale);
  params.workspace = workspace.data_ptr<float>();
  cudaError_t status = launch_decode_attention_bf16(params, at::cuda::getCurrentCUDAStream(device));
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("decode_attention launch failed: ") + cudaGetErrorString(status));
  return out;
#else
  (void)scale, (void)window, (void)splits;
  return out;
#endif
}

at::Tensor decode_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& positions, double scale, const DecodeMaskWindow& window) {
  at::Tensor q64 = q.detach().to(at::kCPU, at::kDouble).contiguous();
  at::Tensor k64 = k.detach().to(at::kCPU, at::kDouble).contiguous();
  at::Tensor v64 = v.detach().to(at::kCPU, at::kDouble).contiguous();
  at::Tensor held = positions.detach().to(at::kCPU, at::kLong);
  if (held.dim() == 2) held = held.unsqueeze(1).expand({-1, k.size(1), -1});  // shared by the heads
  held = held.contiguous();
  at::Tensor query_positions = window.window > 0 ? window.query_positions.detach().to(at::kCPU, at::kLong).contiguous()
                                                 : at::zeros({q.size(0)}, at::kLong);
  at::Tensor out = at::empty_like(q64);
  decode_attention_reference(q64.data_ptr<double>(), k64.data_ptr<double>(), v64.data_ptr<double>(),
                             held.data_ptr<int64_t>(), query_positions.data_ptr<int64_t>(), out.data_ptr<double>(),
                             decode_shape(q64, k64), DecodeWindow{window.sink, window.window}, scale);
  return out;
}

}  // namespace kvforge::kernels
