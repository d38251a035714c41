// Kernels against their float64 CPU references (GPU cases skip without CUDA).
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <algorithm>

#include "kernels/bindings.h"
#include "policies/policy.h"
#include "runtime/generate.h"
#include "runtime/mixed_head_kv_cache.h"
#include "runtime/model_loader.h"
#include "runtime/quantized_kv_cache.h"
#include "runtime/rope.h"
#include "runtime/transformer.h"
#include "tests/test_util.h"

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
  // Per-head positions (each head keeps its own tokens) under a StreamingLLM sink + window.
  at::Tensor per_head = positions.unsqueeze(1).repeat({1, 2, 1});
  per_head[0][1].narrow(0, 5, 12).fill_(-1);
  const kernels::DecodeMaskWindow window{query_positions.squeeze(1), /*sink=*/3, /*window=*/10};
  at::Tensor streamed = grouped_attention(q, k, v, attention_mask(query_positions, per_head, 0, 3, 10));
  at::Tensor streamed_reference = kernels::decode_attention_reference(q, k, v, per_head, 0.25, window);
  EXPECT_LT((streamed_reference - streamed).abs().max().item<double>(), 1e-6);
  EXPECT_GT((streamed_reference - got).abs().max().item<double>(), 1e-2);  // the window matters
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
  if (batch > 1) {  // left padding whose slots hold NaN: they must not reach the output
    const int64_t padding = std::min<int64_t>(slots, 17);
    position_buffer[batch - 1].narrow(0, 0, padding).fill_(-1);
    k_buffer[batch - 1].narrow(1, 0, padding).fill_(std::nan(""));
    v_buffer[batch - 1].narrow(1, 0, padding).fill_(std::nan(""));
  }
  position_buffer = position_buffer.cuda();
  // Views of the first `slots` slots, as the full cache hands them to attention.
  at::Tensor k = k_buffer.narrow(2, 0, slots), v = v_buffer.narrow(2, 0, slots);
  at::Tensor positions = position_buffer.narrow(1, 0, slots);
  ASSERT_TRUE(kernels::decode_attention_supported(q, k, v, positions));
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  at::Tensor out = at::full({batch, heads, 1, head_dim}, std::nan(""), bf16);  // poisoned
  kernels::decode_attention(q, k, v, positions, scale, {}, out);
  at::Tensor reference = kernels::decode_attention_reference(q, k, v, positions, scale);
  at::Tensor got = out.to(at::kCPU, at::kDouble);
  ASSERT_FALSE(got.isnan().any().item<bool>());
  // bf16 output rounding (2^-8 relative) plus fp32 accumulation over the sequence.
  const double error = ((got - reference).abs().max() / reference.abs().max()).item<double>();
  EXPECT_LT(error, 1e-2) << "batch " << batch << " slots " << slots << " group " << group << " dim " << head_dim;

  // Per-head token sets (holes differ by head, as SnapKV or H2O leave them) under a sink + window.
  at::Tensor per_head = position_buffer.narrow(1, 0, slots).unsqueeze(1).repeat({1, kv_heads, 1});
  per_head.masked_fill_(at::rand(per_head.sizes(), per_head.options().dtype(at::kFloat)) < 0.3, -1);
  const kernels::DecodeMaskWindow window{at::full({batch}, slots, per_head.options()), /*sink=*/4,
                                         /*window=*/std::max<int64_t>(slots / 3, 1)};
  at::Tensor windowed = at::full({batch, heads, 1, head_dim}, std::nan(""), bf16);
  kernels::decode_attention(q, k, v, per_head, scale, window, windowed);
  at::Tensor windowed_reference = kernels::decode_attention_reference(q, k, v, per_head, scale, window);
  at::Tensor windowed_got = windowed.to(at::kCPU, at::kDouble);
  ASSERT_FALSE(windowed_got.isnan().any().item<bool>());
  const double windowed_error =
      ((windowed_got - windowed_reference).abs().max() / windowed_reference.abs().max().clamp_min(1e-6)).item<double>();
  EXPECT_LT(windowed_error, 1e-2) << "per-head positions with a window, slots " << slots;
}

// batch, slots of the full heads, ring slots of the streaming heads, query heads per KV head, head_dim
using ByHeadCase = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>;
class DecodeByHeadGpu : public ::testing::TestWithParam<ByHeadCase> {};

// A layer whose full heads sit in a view of a larger growing buffer and whose streaming heads sit in a short ring
// (interleaved head indices, ring slots filled out of order with holes), attended in one launch.
TEST_P(DecodeByHeadGpu, MatchesFloat64ReferenceOverFullHeadsAndARing) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (CI has none; run on the GPU machine)";
  const auto [batch, slots, ring, group, head_dim] = GetParam();
  const int64_t kv_heads = 4, heads = kv_heads * group, capacity = slots + 29;
  at::manual_seed(batch * 613 + slots * 17 + ring * 5 + group + head_dim);
  torch::NoGradGuard no_grad;
  const auto bf16 = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  const auto longs = at::TensorOptions().device(at::kCUDA).dtype(at::kLong);
  at::Tensor q = at::randn({batch, heads, 1, head_dim}).to(bf16);
  kernels::DecodeHeadPart full, streaming;
  full.heads = {0, 3};
  streaming.heads = {2, 1};
  at::Tensor full_keys = (1.5 * at::randn({batch, 2, capacity, head_dim})).to(bf16);
  at::Tensor full_values = at::randn({batch, 2, capacity, head_dim}).to(bf16);
  at::Tensor full_positions = at::arange(capacity, at::kLong).unsqueeze(0).repeat({batch, 1});
  if (batch > 1) {  // left padding whose slots hold NaN: they must not reach the output
    const int64_t padding = std::min<int64_t>(slots, 11);
    full_positions[batch - 1].narrow(0, 0, padding).fill_(-1);
    full_keys[batch - 1].narrow(1, 0, padding).fill_(std::nan(""));
  }
  full.keys = full_keys.cuda().narrow(2, 0, slots);
  full.values = full_values.cuda().narrow(2, 0, slots);
  full.positions = full_positions.cuda().narrow(1, 0, slots);
  // The ring holds positions in rotated order, and its empty slots (position -1) hold NaN.
  streaming.keys = (1.5 * at::randn({batch, 2, ring, head_dim})).to(bf16);
  streaming.values = at::randn({batch, 2, ring, head_dim}).to(bf16);
  at::Tensor ring_positions = (at::arange(ring, at::kLong) + ring / 3) % ring + std::max<int64_t>(slots - ring, 0);
  ring_positions = ring_positions.unsqueeze(0).repeat({batch, 1});
  ring_positions.masked_fill_(at::rand(ring_positions.sizes()) < 0.2, -1);
  streaming.positions = ring_positions.to(longs);
  streaming.keys.masked_fill_(streaming.positions.eq(-1).view({batch, 1, ring, 1}), std::nan(""));
  const kernels::DecodeHeadParts parts{full, streaming};
  ASSERT_TRUE(kernels::decode_by_head_supported(parts, heads));
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  at::Tensor out = at::full({batch, heads, 1, head_dim}, std::nan(""), bf16);  // poisoned
  kernels::decode_attention_by_head(q, parts, scale, {}, out);
  const at::Tensor reference = kernels::decode_attention_by_head_reference(q, parts, scale);
  const at::Tensor got = out.to(at::kCPU, at::kDouble);
  ASSERT_FALSE(got.isnan().any().item<bool>());
  const double error = ((got - reference).abs().max() / reference.abs().max()).item<double>();
  EXPECT_LT(error, 1e-2) << "batch " << batch << " slots " << slots << " ring " << ring << " group " << group << " dim "
                         << head_dim;
  // A part that repeats a head, or misses one, is refused.
  kernels::DecodeHeadParts repeated = parts;
  repeated[1].heads = {2, 0};
  EXPECT_FALSE(kernels::decode_by_head_supported(repeated, heads));
}

INSTANTIATE_TEST_SUITE_P(Shapes, DecodeByHeadGpu,
                         ::testing::Values(ByHeadCase{1, 1, 20, 4, 128}, ByHeadCase{3, 300, 68, 1, 64},
                                           ByHeadCase{2, 999, 1088, 7, 128}, ByHeadCase{64, 257, 40, 8, 64},
                                           ByHeadCase{8, 4095, 1088, 4, 128}, ByHeadCase{1, 32768, 1088, 4, 128},
                                           ByHeadCase{1, 131072, 2048, 8, 128}, ByHeadCase{16, 16384, 320, 2, 64}));

// The model decodes through the kernel on CUDA (small-base-gpu: head_dim 64, 3 query heads per KV head):
// full-cache decode steps agree with one full forward pass, and a streaming cache (per-head positions,
// sink + window) agrees with the same policy on the CPU's masked fp32 path.
TEST(DecodeAttentionInTheModel, MatchesTheMaskedPath) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (CI has none; run on the GPU machine)";
  torch::NoGradGuard no_grad;
  LoadedModel gpu =
      load_model(testing::fixture("../../models/small-base-gpu"), at::Device(at::kCUDA, 0), at::kBFloat16);
  LoadedModel cpu = load_model(testing::fixture("../../models/small-base-gpu"), at::kCPU, at::kFloat);
  at::manual_seed(44);
  const int64_t prompt = 90, steps = 12;
  at::Tensor ids = at::randint(0, 256, {2, prompt + steps}, at::kLong);
  at::Tensor positions = at::arange(prompt + steps, at::kLong).unsqueeze(0).repeat({2, 1});
  at::Tensor full = cpu.model->forward(ids, positions);  // [2, tokens, vocab] fp32 reference
  const auto bf16 = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  ASSERT_TRUE(kernels::decode_attention_supported(at::zeros({2, 6, 1, 64}, bf16), at::zeros({2, 2, 9, 64}, bf16),
                                                  at::zeros({2, 2, 9, 64}, bf16),
                                                  at::zeros({2, 9}, bf16.dtype(at::kLong))))
      << "this model's decode must run through the kernel for the test to mean anything";
  for (const std::string spec : {"full", "streaming:sink=4,window=32", "snapkv:budget=40", "kivi:bits=4,residual=16",
                                 "kivi:bits=2,group=32,residual=16", "heads:sparsity=0.5,sink=4,recent=24,seed=2"}) {
    const PolicySpec policy = parse_policy(spec);
    const bool kivi = spec.rfind("kivi", 0) == 0;
    const CachePlan plan = plan_cache(policy, gpu.config, prompt);
    const auto gpu_options = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
    auto gpu_cache = make_cache(plan, gpu.config, 2, prompt + steps, gpu_options);
    // KIVI's reference: the same bf16 codes dequantized in full on the GPU (decode_query_heads 0 keeps the kernel
    // out), since codes quantized from fp32 keys on the CPU may round to neighbouring levels.
    std::unique_ptr<KVCache> reference_cache =
        kivi ? std::make_unique<QuantizedKVCache>(gpu.config.num_layers, 2, gpu.config.num_kv_heads,
                                                  gpu.config.head_dim, plan.quantization, gpu_options)
             : make_cache(plan_cache(policy, cpu.config, prompt), cpu.config, 2, prompt + steps,
                          at::TensorOptions().dtype(at::kFloat));
    gpu.model->forward(ids.narrow(1, 0, prompt).cuda(), positions.narrow(1, 0, prompt).cuda(), gpu_cache.get());
    if (kivi)
      gpu.model->forward(ids.narrow(1, 0, prompt).cuda(), positions.narrow(1, 0, prompt).cuda(), reference_cache.get());
    else
      cpu.model->forward(ids.narrow(1, 0, prompt), positions.narrow(1, 0, prompt), reference_cache.get());
    for (int64_t t = prompt; t < prompt + steps; ++t) {
      at::Tensor step_ids = ids.narrow(1, t, 1), step_positions = positions.narrow(1, t, 1);
      at::Tensor got =
          gpu.model->forward(step_ids.cuda(), step_positions.cuda(), gpu_cache.get()).to(at::kCPU, at::kFloat);
      at::Tensor expected = spec == "full" ? full.narrow(1, t, 1)
                            : kivi ? gpu.model->forward(step_ids.cuda(), step_positions.cuda(), reference_cache.get())
                                         .to(at::kCPU, at::kFloat)
                                   : cpu.model->forward(step_ids, step_positions, reference_cache.get());
      const double error = ((got - expected).abs().max() / expected.abs().max()).item<double>();
      // Score-selected tokens (SnapKV) may differ between bf16 and fp32 scoring, hence its wider bound.
      EXPECT_LT(error, spec.rfind("snapkv", 0) == 0 ? 0.1 : 5e-2) << spec << " step " << t;
    }
    if (auto* kivi = dynamic_cast<QuantizedKVCache*>(gpu_cache.get()))  // the steps really used the kernel
      EXPECT_EQ(kivi->kernel_steps(), steps * gpu.config.num_layers) << spec;
    if (auto* mixed = dynamic_cast<MixedHeadKVCache*>(gpu_cache.get())) {  // every layer with a streaming head
      int64_t mixed_layers = 0;
      for (const std::vector<bool>& layer : plan.heads.streaming)
        mixed_layers += std::count(layer.begin(), layer.end(), true) > 0;
      EXPECT_GT(mixed_layers, 0);
      EXPECT_EQ(mixed->kernel_steps(), steps * mixed_layers) << spec;
    }
  }
}

// The low-rank reference agrees with rebuilding keys and values by torch ops (RoPE at each token's position) and
// attending them on the masked fp64 path.
TEST(LowRankDecodeAttention, ReferenceMatchesRebuildingThroughTorch) {
  at::manual_seed(21);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const int64_t batch = 2, kv_heads = 2, group = 3, dim = 16, latent = 30, exact = 5, tokens = latent + exact;
  kernels::LowRankDecodeInputs in;
  in.key_latents = at::randn({batch, tokens, 12}, f64);
  in.value_latents = at::randn({batch, tokens, 10}, f64);
  in.key_up = at::randn({kv_heads * dim, 12}, f64) / 3;
  in.value_up = at::randn({kv_heads * dim, 10}, f64) / 3;
  in.key_bias = at::randn({kv_heads * dim}, f64);
  in.value_bias = at::randn({kv_heads * dim}, f64);
  in.latent_positions = at::arange(tokens, at::kLong).unsqueeze(0).repeat({batch, 1}) + 100;
  in.latent_positions[1].narrow(0, 0, 7).fill_(-1);  // left padding
  in.latent_tokens = latent;
  in.exact_keys = at::randn({batch, kv_heads, exact, dim}, f64);
  in.exact_values = at::randn({batch, kv_heads, exact, dim}, f64);
  in.exact_positions = in.latent_positions.narrow(1, latent, exact).contiguous();
  in.inv_freq = rope_inverse_frequencies({}, dim);
  const at::Tensor q = at::randn({batch, kv_heads * group, 1, dim}, f64);
  auto lift = [&](const at::Tensor& latents, const at::Tensor& up, const at::Tensor& bias) {
    return (at::matmul(latents.narrow(1, 0, latent), up.t()) + bias)
        .view({batch, latent, kv_heads, dim})
        .transpose(1, 2);
  };
  const at::Tensor old_positions = in.latent_positions.narrow(1, 0, latent);
  const at::Tensor keys = at::cat(
      {apply_rope(lift(in.key_latents, in.key_up, in.key_bias), rope_angles(in.inv_freq, old_positions, at::kDouble)),
       in.exact_keys},
      2);
  const at::Tensor values = at::cat({lift(in.value_latents, in.value_up, in.value_bias), in.exact_values}, 2);
  const at::Tensor query_positions = at::full({batch, 1}, 200, at::kLong);
  const at::Tensor expected =
      grouped_attention(q, keys, values, attention_mask(query_positions, in.latent_positions, 0));
  const at::Tensor got = kernels::low_rank_decode_attention_reference(q, in, 1.0 / std::sqrt(16.0));
  // rope_angles rounds its angles to fp32 as the model does; the reference keeps float64 products.
  EXPECT_LT((got - expected).abs().max().item<double>(), 1e-4);
  in.latent_positions[0][3] = 7;  // the reference really rotates at the stored positions
  EXPECT_GT((kernels::low_rank_decode_attention_reference(q, in, 0.25) - got).abs().max().item<double>(), 1e-4);
}

// batch, latent tokens, exact tokens, query heads per KV head, head_dim, key rank, value rank.
using LowRankCase = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;
class LowRankDecodeGpu : public ::testing::TestWithParam<LowRankCase> {};

TEST_P(LowRankDecodeGpu, MatchesFloat64Reference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (CI has none; run on the GPU machine)";
  const auto [batch, latent, exact, group, dim, key_rank, value_rank] = GetParam();
  const int64_t kv_heads = group == 8 ? 4 : 2, heads = kv_heads * group, width = kv_heads * dim;
  const int64_t tokens = latent + exact;
  at::manual_seed(batch * 7919 + latent * 31 + exact * 13 + group * 7 + dim + key_rank);
  torch::NoGradGuard no_grad;
  const auto bf16 = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  kernels::LowRankDecodeInputs in;
  in.key_latents = (1.5 * at::randn({batch, tokens, key_rank})).to(bf16);
  in.value_latents = at::randn({batch, tokens, value_rank}).to(bf16);
  in.key_up = (at::randn({width, key_rank}) / std::sqrt(static_cast<double>(key_rank)) * 2).to(bf16);
  in.value_up = (at::randn({width, value_rank}) / std::sqrt(static_cast<double>(value_rank))).to(bf16);
  if (key_rank % 32 != 0) {  // biased projections (Qwen2) on the cases with odd-sized tiles
    in.key_bias = at::randn({width}).to(bf16);
    in.value_bias = at::randn({width}).to(bf16);
  }
  at::Tensor positions = at::arange(tokens, at::kLong).unsqueeze(0).repeat({batch, 1});
  if (batch > 1) {  // left padding whose latents hold NaN: they must not reach the output
    const int64_t padding = std::min<int64_t>(latent, 17);
    positions[batch - 1].narrow(0, 0, padding).fill_(-1);
    in.key_latents[batch - 1].narrow(0, 0, padding).fill_(std::nan(""));
    in.value_latents[batch - 1].narrow(0, 0, padding).fill_(std::nan(""));
  }
  in.latent_positions = positions.cuda();
  in.latent_tokens = latent;
  in.exact_keys = at::randn({batch, kv_heads, exact, dim}).to(bf16);
  in.exact_values = at::randn({batch, kv_heads, exact, dim}).to(bf16);
  in.exact_positions = in.latent_positions.narrow(1, latent, exact).contiguous();
  in.inv_freq = rope_inverse_frequencies({}, dim).cuda();
  ASSERT_TRUE(kernels::low_rank_decode_supported(in, heads));
  const at::Tensor q = at::randn({batch, heads, 1, dim}).to(bf16);
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
  at::Tensor out = at::full({batch, heads, 1, dim}, std::nan(""), bf16);  // poisoned
  kernels::low_rank_decode_attention(q, in, scale, out);
  const at::Tensor reference = kernels::low_rank_decode_attention_reference(q, in, scale);
  const at::Tensor got = out.to(at::kCPU, at::kDouble);
  ASSERT_FALSE(got.isnan().any().item<bool>());
  // bf16 output rounding (2^-8 relative), fp32 angles at positions up to 128k, fp32 accumulation.
  const double error = ((got - reference).abs().max() / reference.abs().max()).item<double>();
  EXPECT_LT(error, 1.5e-2) << "batch " << batch << " latent " << latent << " exact " << exact << " group " << group
                           << " dim " << dim << " ranks " << key_rank << "/" << value_rank;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LowRankDecodeGpu,
    ::testing::Values(LowRankCase{1, 1, 0, 4, 128, 256, 256}, LowRankCase{2, 17, 3, 1, 64, 24, 24},
                      LowRankCase{5, 300, 32, 3, 64, 64, 64}, LowRankCase{3, 1000, 1, 4, 128, 256, 256},
                      LowRankCase{2, 0, 5, 4, 128, 64, 64}, LowRankCase{64, 257, 8, 8, 64, 40, 72},
                      LowRankCase{8, 4095, 32, 4, 128, 256, 256}, LowRankCase{1, 32768, 32, 4, 128, 256, 128},
                      LowRankCase{1, 131040, 32, 8, 128, 128, 256}, LowRankCase{16, 16384, 32, 3, 64, 30, 34}));

// The kernel's reference unpacks codes as the runtime's dequantizers do: both give the same attention.
TEST(QuantizedDecodeAttention, ReferenceMatchesTheRuntimesDequantization) {
  at::manual_seed(8);
  for (const int64_t bits : {2, 4}) {
    const int64_t batch = 2, kv_heads = 2, heads = 6, dim = 64, group = 16, quantized = 48, recent = 7;
    at::Tensor keys = 2 * at::randn({batch, kv_heads, quantized + recent, dim});
    at::Tensor values = at::randn({batch, kv_heads, quantized + recent, dim});
    at::Tensor positions = at::arange(quantized + recent, at::kLong).unsqueeze(0).repeat({batch, 1});
    positions[1].narrow(0, 0, 5).fill_(-1);  // left padding
    const kernels::QuantizedDecodeInputs in = quantize_for_decode(keys, values, positions, quantized, bits, group);
    at::Tensor q = at::randn({batch, heads, 1, dim});
    const at::Tensor dequantized_keys = at::cat(
        {dequantize_keys_per_channel({in.key_codes, in.key_scale, in.key_minimum}, bits, at::kDouble).flatten(2, 3),
         in.recent_keys.to(at::kDouble)},
        2);
    const at::Tensor dequantized_values = at::cat(
        {dequantize_values_per_token({in.value_codes, in.value_scale, in.value_minimum}, bits, group, at::kDouble),
         in.recent_values.to(at::kDouble)},
        2);
    // The codes hold the keys only approximately: far from exact, yet what both paths attend is the same.
    EXPECT_GT((dequantized_keys - keys.to(at::kDouble)).abs().max().item<double>(), 1e-3);
    const at::Tensor expected =
        kernels::decode_attention_reference(q, dequantized_keys, dequantized_values, positions, 0.125);
    const at::Tensor got = kernels::quantized_decode_attention_reference(q, in, 0.125);
    EXPECT_LT((got - expected).abs().max().item<double>(), 1e-6) << bits << " bits";
  }
}

// batch, quantized tokens, recent tokens, query heads per KV head, head_dim, bits, group
using QuantizedCase = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;
class QuantizedDecodeGpu : public ::testing::TestWithParam<QuantizedCase> {};

TEST_P(QuantizedDecodeGpu, MatchesFloat64Reference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (CI has none; run on the GPU machine)";
  const auto [batch, quantized, recent, group, head_dim, bits, scale_group] = GetParam();
  const int64_t kv_heads = group == 8 ? 4 : 2, heads = kv_heads * group, slots = quantized + recent;
  at::manual_seed(batch * 131 + quantized * 7 + recent + group * 3 + head_dim + bits);
  torch::NoGradGuard no_grad;
  const auto bf16 = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  at::Tensor q = at::randn({batch, heads, 1, head_dim}).to(bf16);
  at::Tensor keys = (1.5 * at::randn({batch, kv_heads, slots, head_dim})).to(bf16);
  at::Tensor values = at::randn({batch, kv_heads, slots, head_dim}).to(bf16);
  at::Tensor positions = at::arange(slots, at::kLong).unsqueeze(0).repeat({batch, 1});
  if (batch > 1) positions[batch - 1].narrow(0, 0, std::min<int64_t>(slots, 19)).fill_(-1);  // left padding
  const kernels::QuantizedDecodeInputs in =
      quantize_for_decode(keys, values, positions.cuda(), quantized, bits, scale_group);
  ASSERT_TRUE(kernels::quantized_decode_supported(in, heads));
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  const at::Tensor reference = kernels::quantized_decode_attention_reference(q, in, scale);
  auto relative_error = [&](const at::Tensor& got) {
    return ((got.to(at::kCPU, at::kDouble) - reference).abs().max() / reference.abs().max()).item<double>();
  };
  // The CUDA-core kernel dequantizes in fp32: bf16 output rounding plus fp32 accumulation. The tensor cores read the
  // query folded with the key scales, the values and the weights in bf16, so their bound is bf16 storage's: twice the
  // error of the full kernel attending the same values held in bf16, and no looser than the first.
  double bf16_bound = 1e-2;
  if (quantized > 0) {
    const at::Tensor held_keys = at::cat(
        {dequantize_keys_per_channel({in.key_codes, in.key_scale, in.key_minimum}, bits, at::kBFloat16).flatten(2, 3),
         in.recent_keys},
        2);
    const at::Tensor held_values =
        at::cat({dequantize_values_per_token({in.value_codes, in.value_scale, in.value_minimum}, bits, scale_group,
                                             at::kBFloat16),
                 in.recent_values},
                2);
    bf16_bound = std::max(
        bf16_bound, 2 * relative_error(kernels::decode_attention(q, held_keys, held_values, in.positions, scale)));
  }
  for (const bool tensor_cores : {true, false}) {  // the tensor-core kernel where it applies, and the CUDA-core one
    at::Tensor out = at::full({batch, heads, 1, head_dim}, std::nan(""), bf16);  // poisoned
    kernels::quantized_decode_attention(q, in, scale, out, 0, tensor_cores);
    ASSERT_FALSE(out.isnan().any().item<bool>());
    EXPECT_LT(relative_error(out), tensor_cores ? bf16_bound : 1e-2)
        << "batch " << batch << " quantized " << quantized << " recent " << recent << " group " << group << " dim "
        << head_dim << " bits " << bits << " tensor cores " << tensor_cores;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, QuantizedDecodeGpu,
    ::testing::Values(QuantizedCase{1, 0, 1, 4, 128, 4, 32}, QuantizedCase{2, 32, 1, 1, 64, 2, 32},
                      QuantizedCase{5, 288, 17, 3, 64, 4, 16}, QuantizedCase{3, 992, 40, 4, 128, 2, 32},
                      QuantizedCase{64, 256, 3, 8, 64, 4, 8}, QuantizedCase{1, 4064, 33, 8, 128, 4, 32},
                      QuantizedCase{8, 4064, 31, 2, 128, 2, 32}, QuantizedCase{1, 32736, 32, 4, 128, 4, 32},
                      QuantizedCase{1, 131040, 32, 8, 128, 2, 32}, QuantizedCase{16, 16320, 32, 4, 64, 4, 64},
                      QuantizedCase{4, 512, 5, 4, 128, 2, 8}, QuantizedCase{7, 1008, 1, 5, 128, 4, 16}));

INSTANTIATE_TEST_SUITE_P(Shapes, DecodeAttentionGpu,
                         ::testing::Values(std::make_tuple(1, 1, 4, 128), std::make_tuple(2, 17, 1, 64),
                                           std::make_tuple(5, 300, 3, 64), std::make_tuple(2, 999, 7, 128),
                                           std::make_tuple(3, 1000, 4, 128), std::make_tuple(64, 257, 8, 64),
                                           std::make_tuple(1, 4097, 8, 128), std::make_tuple(8, 4095, 2, 128),
                                           std::make_tuple(1, 32768, 4, 128), std::make_tuple(1, 131072, 8, 128),
                                           std::make_tuple(16, 16384, 4, 64)));

}  // namespace
}  // namespace kvforge
