// Kernels against their float64 CPU references (GPU cases skip without CUDA).
#include <gtest/gtest.h>

#include <torch/cuda.h>
#include <torch/utils.h>

#include "kernels/bindings.h"
#include "runtime/transformer.h"

namespace kvforge {
namespace {

// The torch path the runtime uses on the CPU (and for gradients) agrees with the float64 reference.
TEST(RmsNorm, TorchPathMatchesFloat64Reference) {
  at::manual_seed(21);
  RMSNorm norm(96, 1e-5, at::TensorOptions());
  torch::NoGradGuard no_grad;
  norm->weight.copy_(1.0 + 0.3 * at::randn({96}));
  at::Tensor x = 3.0 * at::randn({5, 7, 96});
  at::Tensor reference = kernels::rms_norm_reference(x, norm->weight, 1e-5);
  const double relative = ((norm->forward(x).to(at::kDouble) - reference).norm() / reference.norm()).item<double>();
  EXPECT_LT(relative, 1e-6);
}

class RmsNormGpu : public ::testing::TestWithParam<std::tuple<at::ScalarType, int64_t, int64_t>> {};

TEST_P(RmsNormGpu, MatchesReferenceAndTorchPath) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (CI has none; run on the GPU machine)";
  const auto [dtype, rows, dim] = GetParam();
  at::manual_seed(rows * 131 + dim);
  torch::NoGradGuard no_grad;
  const auto options = at::TensorOptions().device(at::kCUDA).dtype(dtype);
  at::Tensor x = (2.0 * at::randn({rows, dim}) + 0.5).to(options);
  at::Tensor weight = (1.0 + 0.3 * at::randn({dim})).to(options);
  ASSERT_TRUE(kernels::rms_norm_supported(x, weight));
  at::Tensor out = kernels::rms_norm(x, weight, 1e-6);
  at::Tensor reference = kernels::rms_norm_reference(x, weight, 1e-6);
  const double relative = ((out.to(at::kCPU, at::kDouble) - reference).norm() / reference.norm()).item<double>();
  EXPECT_LT(relative, dtype == at::kFloat ? 1e-6 : 8e-3);
  EXPECT_FALSE(out.isnan().any().item<bool>());
  // Same roundings as the torch formula: identical in fp32 up to accumulation order, ≤1 bf16 ulp in bf16.
  at::Tensor h = x.to(at::kFloat);
  at::Tensor torch_path = weight * (h * at::rsqrt(h.pow(2).mean(-1, true) + 1e-6)).to(dtype);
  const double max_gap = (out.to(at::kFloat) - torch_path.to(at::kFloat)).abs().max().item<double>();
  const double scale = torch_path.to(at::kFloat).abs().max().item<double>();
  EXPECT_LE(max_gap, scale * (dtype == at::kFloat ? 1e-6 : 1.0 / 128));
}

INSTANTIATE_TEST_SUITE_P(Shapes, RmsNormGpu,
                         ::testing::Combine(::testing::Values(at::kFloat, at::kBFloat16), ::testing::Values(1, 3, 257),
                                            ::testing::Values(64, 4095, 8192)));

// The float64 decode reference itself agrees with the runtime's masked attention (fp64 on the CPU), so
// the GPU kernel is judged against a reference that is judged too.
TEST(DecodeAttention, ReferenceMatchesTheMaskedTorchPath) {
  at::manual_seed(5);
  const auto options = at::TensorOptions().dtype(at::kDouble);
  at::Tensor q = at::randn({3, 8, 1, 16}, options), k = at::randn({3, 2, 40, 16}, options);
  at::Tensor v = at::randn({3, 2, 40, 16}, options);
  at::Tensor positions = at::arange(40, at::kLong).unsqueeze(0).repeat({3, 1});
  positions[1].narrow(0, 0, 9).fill_(-1);  // left padding
  positions[2].narrow(0, 30, 10).fill_(-1);
  at::Tensor query_positions = at::full({3, 1}, 40, at::kLong);
  at::Tensor expected = grouped_attention(q, k, v, attention_mask(query_positions, positions, 0));
  at::Tensor got = kernels::decode_attention_reference(q, k, v, positions, 0.25);
  EXPECT_LT((got - expected).abs().max().item<double>(), 1e-6);  // the torch path's softmax runs in fp32
}

// batch, slots, query heads per KV head, head_dim: odd sizes, long sequences, every supported group.
class DecodeAttentionGpu : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, int64_t>> {};

TEST_P(DecodeAttentionGpu, MatchesFloat64ReferenceOnAViewOfALargerCache) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (CI has none; run on the GPU machine)";
  const auto [batch, slots, group, head_dim] = GetParam();
  const int64_t kv_heads = group == 8 ? 4 : 2, heads = kv_heads * group, capacity = slots + 13;
  at::manual_seed(batch * 7919 + slots * 31 + group * 7 + head_dim);
  torch::NoGradGuard no_grad;
  const auto bf16 = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  at::Tensor q = at::randn({batch, heads, 1, head_dim}).to(bf16);
  at::Tensor k_buffer = (1.5 * at::randn({batch, kv_heads, capacity, head_dim})).to(bf16);
  at::Tensor v_buffer = at::randn({batch, kv_heads, capacity, head_dim}).to(bf16);
  at::Tensor position_buffer = at::arange(capacity, at::kLong).unsqueeze(0).repeat({batch, 1});
  if (batch > 1) position_buffer[batch - 1].narrow(0, 0, std::min<int64_t>(slots, 17)).fill_(-1);  // padding
  position_buffer = position_buffer.cuda();
  // Views of the first `slots` slots, as the full cache hands them to attention.
  at::Tensor k = k_buffer.narrow(2, 0, slots), v = v_buffer.narrow(2, 0, slots);
  at::Tensor positions = position_buffer.narrow(1, 0, slots);
  ASSERT_TRUE(kernels::decode_attention_supported(q, k, v, positions));
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  at::Tensor out = at::full({batch, heads, 1, head_dim}, std::nan(""), bf16);  // poisoned
  kernels::decode_attention(q, k, v, positions, scale, out);
  at::Tensor reference = kernels::decode_attention_reference(q, k, v, positions, scale);
  at::Tensor got = out.to(at::kCPU, at::kDouble);
  ASSERT_FALSE(got.isnan().any().item<bool>());
  // bf16 output rounding (2^-8 relative) plus fp32 accumulation over the sequence.
  const double error = ((got - reference).abs().max() / reference.abs().max()).item<double>();
  EXPECT_LT(error, 1e-2) << "batch " << batch << " slots " << slots << " group " << group << " dim " << head_dim;
}

INSTANTIATE_TEST_SUITE_P(Shapes, DecodeAttentionGpu,
                         ::testing::Values(std::make_tuple(1, 1, 4, 128), std::make_tuple(2, 17, 1, 64),
                                           std::make_tuple(3, 1000, 4, 128), std::make_tuple(64, 257, 8, 64),
                                           std::make_tuple(1, 4097, 8, 128), std::make_tuple(8, 4095, 2, 128),
                                           std::make_tuple(1, 32768, 4, 128), std::make_tuple(1, 131072, 8, 128),
                                           std::make_tuple(16, 16384, 4, 64)));

}  // namespace
}  // namespace kvforge
