#include "kernels/bindings.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/decode_attention.h"
#include "kernels/hybrid_decode_step.h"
#include "kernels/low_rank_decode_attention.h"
#include "kernels/quantized_decode_attention.h"
#include "kernels/rms_norm.h"

#ifdef KVFORGE_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace kvforge::kernels {

namespace {

bool aligned_16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

}  // namespace

#ifdef KVFORGE_HAVE_CUDA
namespace {

void check_launch(cudaError_t status, const char* kernel) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string(kernel) + " launch failed: " + cudaGetErrorString(status));
}

}  // namespace
#endif

bool rms_norm_supported(const at::Tensor& x, const at::Tensor& weight) {
#ifdef KVFORGE_HAVE_CUDA
  const bool needs_grad = at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad());
  const auto dtype = x.scalar_type();
  return !needs_grad && x.is_cuda() && weight.device() == x.device() && x.is_contiguous() && weight.is_contiguous() &&
         (dtype == at::kFloat || dtype == at::kBFloat16) && weight.scalar_type() == dtype && weight.dim() == 1 &&
         x.dim() >= 1 && weight.size(0) == x.size(-1);
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
                           ? launch_rms_norm_f32(x.data_ptr<float>(), weight.data_ptr<float>(), out.data_ptr<float>(),
                                                 rows, dim, static_cast<float>(eps), stream)
                           : launch_rms_norm_bf16(reinterpret_cast<const uint16_t*>(x.data_ptr()),
                                                  reinterpret_cast<const uint16_t*>(weight.data_ptr()),
                                                  reinterpret_cast<uint16_t*>(out.data_ptr()), rows, dim,
                                                  static_cast<float>(eps), stream);
  check_launch(status, "rms_norm");
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

namespace {

// K/V rows the decode kernel can read for `batch` sequences: bf16 on `device`, [batch, n, slots, head_dim] with rows
// contiguous and 16-byte aligned (a view of a larger buffer is fine), positions [batch, slots] or [batch, n, slots]
// int64, no gradient.
bool kv_rows_readable(const at::Tensor& k, const at::Tensor& v, const at::Tensor& positions, int64_t batch,
                      int64_t head_dim, const at::Device& device) {
  if (k.dim() != 4 || v.dim() != 4) return false;
  if (positions.dim() != 2 && !(positions.dim() == 3 && positions.size(1) == k.size(1))) return false;
  const bool needs_grad = at::GradMode::is_enabled() && (k.requires_grad() || v.requires_grad());
  auto rows_contiguous = [&](const at::Tensor& t) {
    return t.stride(3) == 1 && t.stride(2) == head_dim && t.stride(1) % 8 == 0 && t.stride(0) % 8 == 0;
  };
  return !needs_grad && k.device() == device && v.device() == device && positions.device() == device &&
         k.scalar_type() == at::kBFloat16 && v.scalar_type() == at::kBFloat16 && positions.scalar_type() == at::kLong &&
         k.sizes() == v.sizes() && k.strides() == v.strides() && k.size(0) == batch && k.size(3) == head_dim &&
         rows_contiguous(k) && aligned_16(k) && aligned_16(v) && positions.size(0) == batch &&
         positions.size(-1) == k.size(2) && positions.stride(-1) == 1;
}

// One query token per sequence, bf16 on a GPU, contiguous and aligned, no gradient.
bool decode_query_readable(const at::Tensor& q) {
  const bool needs_grad = at::GradMode::is_enabled() && q.requires_grad();
  return !needs_grad && q.dim() == 4 && q.size(2) == 1 && q.is_cuda() && q.scalar_type() == at::kBFloat16 &&
         q.is_contiguous() && aligned_16(q);
}

}  // namespace

bool decode_attention_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& positions) {
#ifdef KVFORGE_HAVE_CUDA
  return decode_query_readable(q) && kv_rows_readable(k, v, positions, q.size(0), q.size(3), q.device()) &&
         q.size(1) % k.size(1) == 0 && decode_attention_supported(q.size(3), q.size(1) / k.size(1));
#else
  (void)q, (void)k, (void)v, (void)positions;
  return false;
#endif
}

namespace {

#ifdef KVFORGE_HAVE_CUDA
// What both decode launches share: the query, the output, the window, the chunking and its workspace. `busy_heads`:
// the KV heads that hold about shape.slots slots (the others end early), so the chunking fills the GPU with them.
// Chunks per sequence: `splits` when given (at most one per slot), else decode_attention_splits counting only the
// KV heads that hold about shape.slots (the others end early). Also allocates the flash-decoding workspace for them.
int chunk_plan(const at::Tensor& q, const DecodeAttentionShape& shape, int64_t busy_heads, int64_t splits,
               at::Tensor& workspace) {
  DecodeAttentionShape busy = shape;
  busy.kv_heads = std::max<int64_t>(busy_heads, 1);
  const int chunks = splits > 0 ? static_cast<int>(std::min(splits, std::max<int64_t>(shape.slots, 1)))
                                : decode_attention_splits(
                                      busy, at::cuda::getDeviceProperties(q.device().index())->multiProcessorCount);
  workspace = at::empty({decode_attention_workspace_floats(shape, chunks)}, q.options().dtype(at::kFloat));
  return chunks;
}

DecodeAttentionParams decode_params(const at::Tensor& q, const DecodeAttentionShape& shape, int64_t busy_heads,
                                    double scale, const DecodeMaskWindow& window, const at::Tensor& out, int64_t splits,
                                    at::Tensor& workspace, at::Tensor& query_positions, const char* caller) {
  DecodeAttentionParams params;
  params.shape = shape;
  params.splits = chunk_plan(q, shape, busy_heads, splits, workspace);
  params.q = reinterpret_cast<const uint16_t*>(q.data_ptr());
  if (window.window > 0) {
    query_positions = window.query_positions.to(q.device(), at::kLong).contiguous();
    if (query_positions.numel() != shape.batch)
      throw std::invalid_argument(std::string(caller) + ": query_positions must hold one position per sequence");
    params.query_positions = query_positions.data_ptr<int64_t>();
    params.window = DecodeWindow{window.sink, window.window};
  }
  params.out = reinterpret_cast<uint16_t*>(out.data_ptr());
  params.scale = static_cast<float>(scale);
  params.workspace = workspace.data_ptr<float>();
  return params;
}
#endif

}  // namespace

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& positions,
                            double scale, const DecodeMaskWindow& window, at::Tensor out, int64_t splits) {
  if (!decode_attention_supported(q, k, v, positions))
    throw std::invalid_argument("kernels::decode_attention: unsupported tensors");
#ifdef KVFORGE_HAVE_CUDA
  if (!out.defined()) out = at::empty_like(q);
  const DecodeAttentionShape shape = decode_shape(q, k);
  at::Tensor workspace, query_positions;
  DecodeAttentionParams params = decode_params(q, shape, shape.kv_heads, scale, window, out, splits, workspace,
                                               query_positions, "kernels::decode_attention");
  params.k = reinterpret_cast<const uint16_t*>(k.data_ptr());
  params.v = reinterpret_cast<const uint16_t*>(v.data_ptr());
  params.batch_stride = k.stride(0);
  params.head_stride = k.stride(1);
  params.positions = positions.data_ptr<int64_t>();
  params.positions_stride = positions.stride(0);
  params.positions_head_stride = positions.dim() == 3 ? positions.stride(1) : 0;
  check_launch(launch_decode_attention_bf16(params, at::cuda::getCurrentCUDAStream(q.device().index())),
               "decode_attention");
  return out;
#else
  (void)scale, (void)window, (void)splits;
  return out;
#endif
}

namespace {

int64_t parts_kv_heads(const DecodeHeadParts& parts) {
  int64_t heads = 0;
  for (const DecodeHeadPart& part : parts) heads += static_cast<int64_t>(part.heads.size());
  return heads;
}

int64_t parts_slots(const DecodeHeadParts& parts) {
  int64_t slots = 0;
  for (const DecodeHeadPart& part : parts) slots = std::max(slots, part.keys.size(2));
  return slots;
}

}  // namespace

bool decode_by_head_supported(const DecodeHeadParts& parts, int64_t query_heads) {
#ifdef KVFORGE_HAVE_CUDA
  const int64_t kv_heads = parts_kv_heads(parts);
  if (parts.empty() || kv_heads == 0 || kv_heads > kMaxDecodeTableHeads || query_heads % kv_heads != 0) return false;
  const at::Tensor& first = parts.front().keys;
  if (first.dim() != 4 || !first.is_cuda()) return false;
  std::vector<int> covered(static_cast<size_t>(kv_heads), 0);
  for (const DecodeHeadPart& part : parts) {
    if (!kv_rows_readable(part.keys, part.values, part.positions, first.size(0), first.size(3), first.device()) ||
        part.positions.dim() != 2 || part.keys.size(1) != static_cast<int64_t>(part.heads.size()))
      return false;
    for (int64_t head : part.heads)
      if (head < 0 || head >= kv_heads || covered[static_cast<size_t>(head)]++ > 0) return false;
  }
  return decode_attention_supported(first.size(3), query_heads / kv_heads);
#else
  (void)parts, (void)query_heads;
  return false;
#endif
}

at::Tensor decode_attention_by_head(const at::Tensor& q, const DecodeHeadParts& parts, double scale,
                                    const DecodeMaskWindow& window, at::Tensor out, int64_t splits) {
  if (!decode_by_head_supported(parts, q.dim() == 4 ? q.size(1) : 0) || !decode_query_readable(q) ||
      q.size(0) != parts.front().keys.size(0) || q.size(3) != parts.front().keys.size(3) ||
      q.device() != parts.front().keys.device())
    throw std::invalid_argument("kernels::decode_attention_by_head: unsupported tensors");
#ifdef KVFORGE_HAVE_CUDA
  if (!out.defined()) out = at::empty_like(q);
  DecodeAttentionShape shape;
  shape.batch = q.size(0);
  shape.heads = q.size(1);
  shape.kv_heads = parts_kv_heads(parts);
  shape.head_dim = q.size(3);
  shape.slots = parts_slots(parts);
  DecodeHeadTable table;
  int64_t busy_heads = 0;
  for (const DecodeHeadPart& part : parts) {
    for (size_t i = 0; i < part.heads.size(); ++i) {
      const auto offset = static_cast<int64_t>(i) * part.keys.stride(1);
      DecodeHeadSource& source = table.heads[part.heads[i]];
      source.k = reinterpret_cast<const uint16_t*>(part.keys.data_ptr()) + offset;
      source.v = reinterpret_cast<const uint16_t*>(part.values.data_ptr()) + offset;
      source.positions = part.positions.data_ptr<int64_t>();
      source.batch_stride = part.keys.stride(0);
      source.positions_stride = part.positions.stride(0);
      source.slots = part.keys.size(2);
    }
    if (2 * part.keys.size(2) >= shape.slots) busy_heads += static_cast<int64_t>(part.heads.size());
  }
  at::Tensor workspace, query_positions;
  const DecodeAttentionParams params = decode_params(q, shape, busy_heads, scale, window, out, splits, workspace,
                                                     query_positions, "kernels::decode_attention_by_head");
  check_launch(launch_decode_attention_by_head_bf16(params, table, at::cuda::getCurrentCUDAStream(q.device().index())),
               "decode_attention_by_head");
  return out;
#else
  (void)scale, (void)window, (void)splits;
  return out;
#endif
}

at::Tensor decode_attention_by_head_reference(const at::Tensor& q, const DecodeHeadParts& parts, double scale,
                                              const DecodeMaskWindow& window) {
  // The parts assembled into one per-head view, slots a head lacks at position -1.
  const int64_t batch = q.size(0), kv_heads = parts_kv_heads(parts), slots = parts_slots(parts);
  const auto doubles = at::TensorOptions().dtype(at::kDouble);
  at::Tensor keys = at::zeros({batch, kv_heads, slots, q.size(3)}, doubles);
  at::Tensor values = at::zeros_like(keys);
  at::Tensor positions = at::full({batch, kv_heads, slots}, -1, doubles.dtype(at::kLong));
  for (const DecodeHeadPart& part : parts) {
    for (size_t i = 0; i < part.heads.size(); ++i) {
      const int64_t head = part.heads[i], held = part.keys.size(2);
      keys.select(1, head).narrow(1, 0, held).copy_(part.keys.select(1, static_cast<int64_t>(i)));
      values.select(1, head).narrow(1, 0, held).copy_(part.values.select(1, static_cast<int64_t>(i)));
      positions.select(1, head).narrow(1, 0, held).copy_(part.positions);
    }
  }
  return decode_attention_reference(q, keys, values, positions, scale, window);
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

namespace {

LowRankDecodeShape low_rank_shape(const at::Tensor& q, const LowRankDecodeInputs& inputs) {
  LowRankDecodeShape shape;
  shape.batch = q.size(0);
  shape.heads = q.size(1);
  shape.kv_heads = inputs.exact_keys.size(1);
  shape.head_dim = q.size(3);
  shape.key_rank = inputs.key_latents.size(2);
  shape.value_rank = inputs.value_latents.size(2);
  shape.latent_stride = inputs.key_latents.size(1);
  shape.latent_tokens = inputs.latent_tokens;
  shape.exact_tokens = inputs.exact_keys.size(2);
  return shape;
}

}  // namespace

bool quantized_decode_supported(const QuantizedDecodeInputs& in, int64_t query_heads) {
#ifdef KVFORGE_HAVE_CUDA
  if (at::GradMode::is_enabled() && in.recent_keys.requires_grad()) return false;
  if (!in.recent_keys.defined() || !in.recent_values.defined() || !in.positions.defined()) return false;
  const at::Tensor& keys = in.recent_keys;
  if (keys.dim() != 4 || !keys.is_cuda() || keys.scalar_type() != at::kBFloat16) return false;
  const int64_t batch = keys.size(0), kv_heads = keys.size(1), head_dim = keys.size(3);
  const int64_t quantized = in.quantized_tokens();
  if ((in.bits != 2 && in.bits != 4) || in.group < 8 || (in.group & (in.group - 1)) != 0 || head_dim % in.group != 0 ||
      quantized % in.group != 0 || query_heads % kv_heads != 0 ||
      !decode_attention_supported(head_dim, query_heads / kv_heads))
    return false;
  auto fits = [&](const at::Tensor& t, at::ScalarType dtype, std::vector<int64_t> sizes) {
    return t.defined() && t.device() == keys.device() && t.scalar_type() == dtype && t.is_contiguous() &&
           t.sizes().vec() == sizes && aligned_16(t);
  };
  const int64_t recent = keys.size(2), packed = head_dim * in.bits / 8;
  bool ok = fits(in.recent_keys, at::kBFloat16, {batch, kv_heads, recent, head_dim}) &&
            fits(in.recent_values, at::kBFloat16, {batch, kv_heads, recent, head_dim}) &&
            fits(in.positions, at::kLong, {batch, quantized + recent});
  if (quantized > 0) {
    const int64_t groups = quantized / in.group;
    ok = ok && fits(in.key_codes, at::kByte, {batch, kv_heads, groups, in.group, packed}) &&
         fits(in.key_scale, at::kHalf, {batch, kv_heads, groups, 1, head_dim}) &&
         fits(in.key_minimum, at::kHalf, {batch, kv_heads, groups, 1, head_dim}) &&
         fits(in.value_codes, at::kByte, {batch, kv_heads, quantized, packed}) &&
         fits(in.value_scale, at::kHalf, {batch, kv_heads, quantized, head_dim / in.group}) &&
         fits(in.value_minimum, at::kHalf, {batch, kv_heads, quantized, head_dim / in.group});
  }
  return ok;
#else
  (void)in, (void)query_heads;
  return false;
#endif
}

at::Tensor quantized_decode_attention(const at::Tensor& q, const QuantizedDecodeInputs& in, double scale,
                                      at::Tensor out, int64_t splits, bool tensor_cores) {
  if (!decode_query_readable(q) || !quantized_decode_supported(in, q.size(1)) ||
      q.device() != in.recent_keys.device() || q.size(0) != in.recent_keys.size(0) ||
      q.size(3) != in.recent_keys.size(3))
    throw std::invalid_argument("kernels::quantized_decode_attention: unsupported tensors");
#ifdef KVFORGE_HAVE_CUDA
  if (!out.defined()) out = at::empty_like(q);
  const int64_t quantized = in.quantized_tokens();
  DecodeAttentionShape shape = decode_shape(q, in.recent_keys);
  shape.slots = quantized + in.recent_keys.size(2);
  const int device = q.device().index();
  QuantizedDecodeParams params;
  params.shape = shape;
  at::Tensor workspace;
  params.splits = chunk_plan(q, shape, shape.kv_heads, splits, workspace);
  auto half = [](const at::Tensor& t) {
    return t.defined() ? reinterpret_cast<const uint16_t*>(t.data_ptr()) : nullptr;
  };
  auto bytes = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<uint8_t>() : nullptr; };
  params.q = reinterpret_cast<const uint16_t*>(q.data_ptr());
  params.tensor_cores = tensor_cores;
  params.bits = static_cast<int>(in.bits);
  params.group = static_cast<int>(in.group);
  params.quantized = quantized;
  if (quantized > 0) {
    params.key_codes = bytes(in.key_codes);
    params.key_scale = half(in.key_scale);
    params.key_minimum = half(in.key_minimum);
    params.value_codes = bytes(in.value_codes);
    params.value_scale = half(in.value_scale);
    params.value_minimum = half(in.value_minimum);
  }
  params.recent_keys = half(in.recent_keys);
  params.recent_values = half(in.recent_values);
  params.positions = in.positions.data_ptr<int64_t>();
  params.out = reinterpret_cast<uint16_t*>(out.data_ptr());
  params.scale = static_cast<float>(scale);
  params.workspace = workspace.data_ptr<float>();
  cudaError_t status = launch_quantized_decode_attention_bf16(params, at::cuda::getCurrentCUDAStream(device));
  check_launch(status, "quantized_decode_attention");
  return out;
#else
  (void)scale, (void)splits, (void)tensor_cores;
  return out;
#endif
}

at::Tensor quantized_decode_attention_reference(const at::Tensor& q, const QuantizedDecodeInputs& in, double scale) {
  auto f64 = [](const at::Tensor& t) { return t.detach().to(at::kCPU, at::kDouble); };
  // Codes unpacked lowest-first: code i of a byte is (byte >> bits·i) mod 2^bits.
  auto unpack = [&](const at::Tensor& codes) {
    const int64_t per_byte = 8 / in.bits;
    at::Tensor shifts = at::pow(2, at::arange(per_byte, at::kLong) * in.bits);
    std::vector<int64_t> shape = codes.sizes().vec();
    shape.back() *= per_byte;
    return at::div(codes.to(at::kCPU, at::kLong).unsqueeze(-1), shifts, "floor")
        .remainder(int64_t{1} << in.bits)
        .reshape(shape)
        .to(at::kDouble);
  };
  at::Tensor keys = f64(in.recent_keys), values = f64(in.recent_values);
  if (in.quantized_tokens() > 0) {
    at::Tensor old_keys = (unpack(in.key_codes) * f64(in.key_scale) + f64(in.key_minimum)).flatten(2, 3);
    at::Tensor value_codes = unpack(in.value_codes);
    std::vector<int64_t> grouped = value_codes.sizes().vec();
    grouped.back() /= in.group;
    grouped.push_back(in.group);
    at::Tensor old_values =
        (value_codes.reshape(grouped) * f64(in.value_scale).unsqueeze(-1) + f64(in.value_minimum).unsqueeze(-1))
            .reshape(value_codes.sizes());
    keys = at::cat({old_keys, keys}, 2);
    values = at::cat({old_values, values}, 2);
  }
  return decode_attention_reference(q, keys, values, in.positions, scale);
}

bool low_rank_decode_supported(const LowRankDecodeInputs& inputs, int64_t query_heads) {
#ifdef KVFORGE_HAVE_CUDA
  const LowRankDecodeInputs& in = inputs;
  if (!in.exact_keys.defined() || !in.exact_keys.is_cuda()) return false;
  const at::Device device = in.exact_keys.device();
  for (const at::Tensor* t : {&in.key_latents, &in.value_latents, &in.key_up, &in.value_up, &in.exact_keys,
                              &in.exact_values, &in.key_bias, &in.value_bias}) {
    const bool optional = t == &in.key_bias || t == &in.value_bias;
    if (optional && !t->defined()) continue;
    if (!t->defined() || t->device() != device || t->scalar_type() != at::kBFloat16 || !t->is_contiguous())
      return false;
  }
  for (const at::Tensor* t : {&in.latent_positions, &in.exact_positions})
    if (!t->defined() || t->device() != device || t->scalar_type() != at::kLong || !t->is_contiguous()) return false;
  if (!in.inv_freq.defined() || in.inv_freq.device() != device || in.inv_freq.scalar_type() != at::kFloat ||
      !in.inv_freq.is_contiguous())
    return false;
  if (in.key_latents.dim() != 3 || in.value_latents.dim() != 3 || in.exact_keys.dim() != 4) return false;
  const int64_t batch = in.exact_keys.size(0), kv_heads = in.exact_keys.size(1), dim = in.exact_keys.size(3);
  const int64_t width = kv_heads * dim, tokens = in.key_latents.size(1);
  const int64_t key_rank = in.key_latents.size(2), value_rank = in.value_latents.size(2);
  return kv_heads > 0 && query_heads % kv_heads == 0 &&
         low_rank_decode_supported(dim, query_heads / kv_heads, key_rank, value_rank) &&
         in.key_latents.size(0) == batch && in.value_latents.size(0) == batch && in.value_latents.size(1) == tokens &&
         in.latent_tokens >= 0 && in.latent_tokens <= tokens &&
         in.key_up.sizes() == at::IntArrayRef({width, key_rank}) &&
         in.value_up.sizes() == at::IntArrayRef({width, value_rank}) &&
         (!in.key_bias.defined() || in.key_bias.numel() == width) &&
         (!in.value_bias.defined() || in.value_bias.numel() == width) &&
         in.latent_positions.sizes() == at::IntArrayRef({batch, tokens}) &&
         in.exact_values.sizes() == in.exact_keys.sizes() &&
         in.exact_positions.sizes() == at::IntArrayRef({batch, in.exact_keys.size(2)}) &&
         in.inv_freq.numel() == dim / 2;
#else
  (void)inputs, (void)query_heads;
  return false;
#endif
}

at::Tensor low_rank_decode_attention(const at::Tensor& q, const LowRankDecodeInputs& inputs, double scale,
                                     at::Tensor out, int64_t splits) {
  const bool query_fits = q.dim() == 4 && q.size(2) == 1 && q.scalar_type() == at::kBFloat16 && q.is_contiguous() &&
                          q.device() == inputs.exact_keys.device() && q.size(0) == inputs.exact_keys.size(0) &&
                          q.size(3) == inputs.exact_keys.size(3) && !(at::GradMode::is_enabled() && q.requires_grad());
  if (!query_fits || !low_rank_decode_supported(inputs, q.size(1)))
    throw std::invalid_argument("kernels::low_rank_decode_attention: unsupported tensors");
#ifdef KVFORGE_HAVE_CUDA
  if (!out.defined()) out = at::empty_like(q);
  const LowRankDecodeShape shape = low_rank_shape(q, inputs);
  const int device = q.device().index();
  LowRankDecodeParams params;
  params.shape = shape;
  params.splits = splits > 0
                      ? static_cast<int>(splits)
                      : low_rank_decode_splits(shape, at::cuda::getDeviceProperties(device)->multiProcessorCount);
  at::Tensor workspace = at::empty({std::max<int64_t>(1, low_rank_decode_workspace_floats(shape, params.splits))},
                                   q.options().dtype(at::kFloat));
  auto bf16 = [](const at::Tensor& t) {
    return t.defined() ? reinterpret_cast<const uint16_t*>(t.data_ptr()) : nullptr;
  };
  params.q = bf16(q);
  params.key_latents = bf16(inputs.key_latents);
  params.value_latents = bf16(inputs.value_latents);
  params.key_up = bf16(inputs.key_up);
  params.value_up = bf16(inputs.value_up);
  params.key_bias = bf16(inputs.key_bias);
  params.value_bias = bf16(inputs.value_bias);
  params.latent_positions = inputs.latent_positions.data_ptr<int64_t>();
  params.exact_keys = bf16(inputs.exact_keys);
  params.exact_values = bf16(inputs.exact_values);
  params.exact_positions = inputs.exact_positions.data_ptr<int64_t>();
  params.inv_freq = inputs.inv_freq.data_ptr<float>();
  params.out = reinterpret_cast<uint16_t*>(out.data_ptr());
  params.scale = static_cast<float>(scale);
  params.workspace = workspace.data_ptr<float>();
  cudaError_t status = launch_low_rank_decode_attention_bf16(params, at::cuda::getCurrentCUDAStream(device));
  check_launch(status, "low_rank_decode_attention");
  return out;
#else
  (void)scale, (void)splits;
  return out;
#endif
}

at::Tensor low_rank_decode_attention_reference(const at::Tensor& q, const LowRankDecodeInputs& inputs, double scale) {
  auto f64 = [](const at::Tensor& t) { return t.detach().to(at::kCPU, at::kDouble).contiguous(); };
  auto i64 = [](const at::Tensor& t) { return t.detach().to(at::kCPU, at::kLong).contiguous(); };
  const at::Tensor q64 = f64(q), key_latents = f64(inputs.key_latents), value_latents = f64(inputs.value_latents);
  const at::Tensor key_up = f64(inputs.key_up), value_up = f64(inputs.value_up);
  const at::Tensor key_bias = inputs.key_bias.defined() ? f64(inputs.key_bias) : at::Tensor();
  const at::Tensor value_bias = inputs.value_bias.defined() ? f64(inputs.value_bias) : at::Tensor();
  const at::Tensor exact_keys = f64(inputs.exact_keys), exact_values = f64(inputs.exact_values);
  const at::Tensor latent_positions = i64(inputs.latent_positions), exact_positions = i64(inputs.exact_positions);
  const at::Tensor inv_freq = inputs.inv_freq.detach().to(at::kCPU, at::kFloat).contiguous();
  at::Tensor out = at::empty_like(q64);
  low_rank_decode_attention_reference(
      q64.data_ptr<double>(), key_latents.data_ptr<double>(), value_latents.data_ptr<double>(),
      key_up.data_ptr<double>(), value_up.data_ptr<double>(),
      key_bias.defined() ? key_bias.data_ptr<double>() : nullptr,
      value_bias.defined() ? value_bias.data_ptr<double>() : nullptr, latent_positions.data_ptr<int64_t>(),
      exact_keys.data_ptr<double>(), exact_values.data_ptr<double>(), exact_positions.data_ptr<int64_t>(),
      inv_freq.data_ptr<float>(), out.data_ptr<double>(), low_rank_shape(q, inputs), scale);
  return out;
}

bool hybrid_decode_step_supported(const HybridDecodeTensors& state, const HybridDecodeToken& token) {
#ifdef KVFORGE_HAVE_CUDA
  if (!state.keys.defined() || !state.keys.is_cuda() || !token.query.defined()) return false;
  const at::ScalarType dtype = state.keys.scalar_type();
  if (dtype != at::kFloat && dtype != at::kBFloat16) return false;
  const at::Device device = state.keys.device();
  auto same = [&](const at::Tensor& t, at::ScalarType type) {
    return t.device() == device && t.scalar_type() == type && t.is_contiguous();
  };
  for (const at::Tensor* t : {&state.keys, &state.values, &state.features})
    if (!same(*t, dtype)) return false;
  for (const at::Tensor* t :
       {&token.query_features, &token.key_features, &token.query, &token.key, &token.value})  // copied if strided
    if (t->device() != device || t->scalar_type() != dtype) return false;
  for (const at::Tensor* t : {&state.state, &state.normaliser, &state.log_gates})
    if (!same(*t, at::kFloat)) return false;
  if (!same(state.valid, at::kBool)) return false;
  for (const at::Tensor* t : {&token.log_gate, &token.sink_logits, &token.window_logits, &token.valid})
    if (t->defined() && t->device() != device) return false;
  const int64_t value_dim = state.values.size(3);
  const bool needs_grad = at::GradMode::is_enabled() && (token.query.requires_grad() || token.value.requires_grad() ||
                                                         token.query_features.requires_grad());
  return !needs_grad && (value_dim == 32 || value_dim == 64 || value_dim == 128) && token.query.size(2) == 1 &&
         state.keys.size(2) <= 8192 && state.features.size(3) <= 1024;
#else
  return false;
#endif
}

at::Tensor hybrid_decode_step(HybridDecodeTensors& state, const HybridDecodeToken& token, int64_t tokens, bool lolcats,
                              bool linear_all, double window_scale) {
  if (!hybrid_decode_step_supported(state, token))
    throw std::invalid_argument("kernels::hybrid_decode_step: unsupported tensors");
#ifdef KVFORGE_HAVE_CUDA
  const int64_t batch = state.keys.size(0), heads = state.keys.size(1);
  at::Tensor out = at::empty({batch, heads, 1, state.values.size(3)}, state.values.options());
  const at::Tensor log_gate = token.log_gate.defined() ? token.log_gate.to(at::kFloat).contiguous() : at::Tensor();
  // As the reference: sinks are Lizard's, window weights LoLCATs'.
  const at::Tensor sinks =
      !lolcats && token.sink_logits.defined() ? token.sink_logits.to(at::kFloat).contiguous() : at::Tensor();
  const at::Tensor window_logits =
      lolcats && token.window_logits.defined() ? token.window_logits.to(at::kFloat).contiguous() : at::Tensor();
  if (lolcats && !window_logits.defined())
    throw std::invalid_argument("kernels::hybrid_decode_step: LoLCATs needs window_logits [heads]");
  const at::Tensor valid = token.valid.defined() ? token.valid.to(at::kBool).contiguous() : at::Tensor();
  const at::Tensor query_features = token.query_features.contiguous(), key_features = token.key_features.contiguous();
  const at::Tensor query = token.query.contiguous(), key = token.key.contiguous(), value = token.value.contiguous();
  auto fill = [&](auto& step) {
    using Word = std::remove_pointer_t<decltype(step.ring_keys)>;
    auto words = [](const at::Tensor& t) { return reinterpret_cast<Word*>(t.data_ptr()); };
    step.state = state.state.data_ptr<float>();
    step.normaliser = state.normaliser.data_ptr<float>();
    step.ring_keys = words(state.keys);
    step.ring_values = words(state.values);
    step.ring_features = words(state.features);
    step.ring_log_gates = state.log_gates.data_ptr<float>();
    step.ring_valid = state.valid.data_ptr<bool>();
    step.query_features = words(query_features);
    step.key_features = words(key_features);
    step.query = words(query);
    step.key = words(key);
    step.value = words(value);
    step.log_gate = log_gate.defined() ? log_gate.data_ptr<float>() : nullptr;
    step.sink_logits = sinks.defined() ? sinks.data_ptr<float>() : nullptr;
    step.window_logits = window_logits.defined() ? window_logits.data_ptr<float>() : nullptr;
    step.valid = valid.defined() ? valid.data_ptr<bool>() : nullptr;
    step.out = words(out);
    step.batch = static_cast<int>(batch);
    step.heads = static_cast<int>(heads);
    step.features = static_cast<int>(state.features.size(3));
    step.head_dim = static_cast<int>(state.keys.size(3));
    step.value_dim = static_cast<int>(state.values.size(3));
    step.window = static_cast<int>(state.keys.size(2));
    step.sinks = sinks.defined() ? static_cast<int>(sinks.size(1)) : 0;
    step.tokens = tokens;
    step.lolcats = lolcats;
    step.linear_all = linear_all;
    step.window_scale = static_cast<float>(window_scale);
    step.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(state.keys.size(3))));
  };
  cudaStream_t stream = at::cuda::getCurrentCUDAStream(state.keys.device().index());
  cudaError_t status;
  if (state.keys.scalar_type() == at::kFloat) {
    HybridDecodeStep<float> step{};
    fill(step);
    status = launch_hybrid_decode_step_f32(step, stream);
  } else {
    HybridDecodeStep<uint16_t> step{};
    fill(step);
    status = launch_hybrid_decode_step_bf16(step, stream);
  }
  check_launch(status, "hybrid_decode_step");
  return out;
#else
  return at::Tensor();
#endif
}

}  // namespace kvforge::kernels
