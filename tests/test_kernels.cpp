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

}  // namespace
}  // namespace kvforge
