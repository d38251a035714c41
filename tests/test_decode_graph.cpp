// Fixed-shape decode (KVCache::begin_fixed_shape_decode) and its CUDA graph give eager decode's logits, for every
// layout that takes it; the layouts that cannot say so and decode eagerly.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <utility>

#include "policies/policy.h"
#include "runtime/decode_graph.h"
#include "runtime/generate.h"
#include "runtime/model_loader.h"
#include "tests/test_util.h"

namespace kvforge {
namespace {

constexpr int64_t kPrompt = 64, kSteps = 10, kFinishAfter = 4;

struct Batch {
  at::Tensor ids, positions, fed;  // a left-padded prompt batch of two, and the tokens fed after it
};

Batch random_batch(int64_t vocab) {
  at::manual_seed(77);
  Batch batch;
  batch.ids = at::randint(0, vocab, {2, kPrompt}, at::kLong);
  batch.positions = at::arange(kPrompt, at::kLong).unsqueeze(0).repeat({2, 1});
  batch.positions[1].narrow(0, 0, 7).fill_(-1);
  batch.positions[1].narrow(0, 7, kPrompt - 7).copy_(at::arange(kPrompt - 7, at::kLong));
  batch.fed = at::randint(0, vocab, {2, kSteps}, at::kLong);
  return batch;
}

enum class Steps { kEager, kFixedShape, kGraph };

struct Decoded {
  at::Tensor logits;  // [steps, batch, vocab] on the CPU, fp32
  bool fixed_shape = false, captured = false;
};

// The prompt in one prefill, then kSteps fed tokens (teacher forcing, so every path sees the same inputs); the second
// sequence finishes after kFinishAfter steps and steps on at position -1, as generate() steps a finished sequence.
Decoded decode(Transformer& model, const std::string& spec, Steps steps) {
  torch::NoGradGuard no_grad;
  const ModelConfig& config = model->config;
  const at::TensorOptions options = model->output_weight().options();
  auto cache = make_cache(plan_cache(parse_policy(spec), config, kPrompt), config, 2, kPrompt + kSteps, options);
  const Batch batch = random_batch(config.vocab_size);
  model->forward(batch.ids.to(options.device()), batch.positions.to(options.device()), cache.get(), true);
  std::unique_ptr<FixedShapeDecode> fixed;
  if (steps != Steps::kEager) fixed = FixedShapeDecode::create(model, *cache, 2, kSteps, steps == Steps::kGraph);
  Decoded decoded;
  decoded.fixed_shape = fixed != nullptr;
  std::vector<at::Tensor> logits;
  at::Tensor next = std::get<0>(batch.positions.max(1, /*keepdim=*/true)) + 1;
  for (int64_t t = 0; t < kSteps; ++t) {
    at::Tensor positions = next + t;
    if (t >= kFinishAfter) positions[1][0] = -1;
    const at::Tensor ids = batch.fed.narrow(1, t, 1).contiguous();
    const at::Tensor step = fixed ? fixed->step(ids, positions)
                                  : model->forward(ids.to(options.device()), positions.to(options.device()),
                                                   cache.get(), /*last_only=*/true);
    logits.push_back(step.squeeze(1).to(at::kCPU, at::kFloat));
  }
  decoded.captured = fixed && fixed->captured();
  decoded.logits = at::stack(logits);
  return decoded;
}

// The rows that mean something: the finished sequence's logits after it finished are thrown away.
at::Tensor real_rows(const at::Tensor& logits) {
  return at::cat({logits.select(1, 0), logits.select(1, 1).narrow(0, 0, kFinishAfter)});
}

double relative_difference(const at::Tensor& got, const at::Tensor& expected) {
  return ((real_rows(got) - real_rows(expected)).abs().max() / real_rows(expected).abs().max()).item<double>();
}

// Layouts that take fixed-shape steps at this prompt: the full cache, StreamingLLM, the selective caches that evict one
// token a step at their budget (H2O, TOVA, SnapKV's decode=1) or keep every generated token (SnapKV, PyramidKV,
// Expected Attention), and mixed full/streaming heads.
const std::vector<std::string> kFixedShapeSpecs = {"full",
                                                   "streaming:budget=0.25",
                                                   "snapkv:budget=0.25",
                                                   "snapkv:budget=0.25,decode=1",
                                                   "pyramidkv:budget=0.3",
                                                   "h2o:budget=0.3",
                                                   "tova:budget=0.3",
                                                   "expected:budget=0.3",
                                                   "heads:sparsity=0.5,sink=2,recent=6"};

TEST(FixedShapeDecode, GivesTheEagerLogitsOnTheCpu) {
  Transformer& model = testing::tiny_base_model().model;
  for (const std::string& spec : kFixedShapeSpecs) {
    const Decoded eager = decode(model, spec, Steps::kEager);
    const Decoded fixed = decode(model, spec, Steps::kFixedShape);
    ASSERT_TRUE(fixed.fixed_shape) << spec << ": the layout declined fixed-shape decode";
    // The fixed-shape steps attend over the whole store (the slots to come masked), so sums may round differently.
    EXPECT_LE(relative_difference(fixed.logits, eager.logits), 1e-5) << spec;
    // Teacher forcing: the steps differ from each other, so a step that reread an old slot would show.
    EXPECT_GT(relative_difference(eager.logits.narrow(0, 1, kSteps - 1), eager.logits.narrow(0, 0, kSteps - 1)), 1e-2)
        << spec;
  }
}

// KIVI flushes its full-precision window into codes every group of tokens (a host decision), and PrefixKV's
// fixed-index rule removes a count of slots that grows with the steps: both decode eagerly, with the same result.
TEST(FixedShapeDecode, KiviAndPrefixKvDeclineAndDecodeAsBefore) {
  Transformer& model = testing::tiny_base_model().model;
  for (const std::string spec : {"kivi:bits=2,residual=16", "uniform:budget=0.3"}) {
    const Decoded eager = decode(model, spec, Steps::kEager);
    const Decoded fixed = decode(model, spec, Steps::kFixedShape);
    EXPECT_FALSE(fixed.fixed_shape) << spec;
    EXPECT_TRUE(at::equal(fixed.logits, eager.logits)) << spec;
  }
}

// A layer still below its budget after the prompt would grow while decoding: the selective cache declines then.
TEST(FixedShapeDecode, AnEvictingLayerBelowItsBudgetDeclines) {
  Transformer& model = testing::tiny_base_model().model;
  EXPECT_FALSE(decode(model, "h2o:budget=200", Steps::kFixedShape).fixed_shape);
}

// generate() with `option` off, then on.
std::pair<GenerationResult, GenerationResult> generate_off_and_on(Transformer& model,
                                                                  const std::vector<std::vector<int64_t>>& prompts,
                                                                  int64_t max_new_tokens,
                                                                  bool GenerationOptions::*option) {
  GenerationOptions options;
  options.max_new_tokens = max_new_tokens;
  options.*option = false;
  GenerationResult off = generate(model, prompts, options);
  options.*option = true;
  return {std::move(off), generate(model, prompts, options)};
}

TEST(FixedShapeDecode, GenerateGivesTheEagerTokens) {
  LoadedModel& loaded = testing::tiny_base_model();
  const std::vector<int64_t> short_prompt = loaded.tokenizer->encode("The pass key is 4417. What is the pass key?");
  const std::vector<int64_t> long_prompt =
      loaded.tokenizer->encode("Remember it well: the pass key is 90210. Now, what is the pass key? It is");
  const auto [eager, fixed] =
      generate_off_and_on(loaded.model, {short_prompt, long_prompt}, 12, &GenerationOptions::fixed_shape_decode);
  for (size_t b = 0; b < 2; ++b) EXPECT_EQ(fixed.sequences[b].tokens, eager.sequences[b].tokens) << b;
  EXPECT_FALSE(fixed.graph_decode);  // the CPU has no graphs
}

// On CUDA the captured graph replays exactly the fixed-shape eager steps (the same kernels on the same buffers), and
// those match eager decode within the dtype's rounding; generate() takes the graph and keeps its tokens.
TEST(DecodeGraph, ReplaysTheFixedShapeStepsOnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (CI has none; run on the GPU machine)";
  for (at::ScalarType dtype : {at::kBFloat16, at::kFloat}) {
    LoadedModel gpu = load_model(testing::fixture("../../models/tiny-base"), at::Device(at::kCUDA, 0), dtype);
    for (const std::string& spec : kFixedShapeSpecs) {
      const Decoded eager = decode(gpu.model, spec, Steps::kEager);
      const Decoded fixed = decode(gpu.model, spec, Steps::kFixedShape);
      const Decoded graph = decode(gpu.model, spec, Steps::kGraph);
      ASSERT_TRUE(graph.captured) << spec << " " << at::toString(dtype);
      EXPECT_TRUE(at::equal(graph.logits, fixed.logits))
          << spec << " " << at::toString(dtype) << ": " << relative_difference(graph.logits, fixed.logits);
      EXPECT_LE(relative_difference(graph.logits, eager.logits), dtype == at::kFloat ? 1e-5 : 2e-2)
          << spec << " " << at::toString(dtype);
    }
    const std::vector<int64_t> prompt = gpu.tokenizer->encode("The pass key is 4417. What is the pass key? It is");
    const auto [eager, graph] = generate_off_and_on(gpu.model, {prompt, prompt}, 16, &GenerationOptions::cuda_graph);
    EXPECT_TRUE(graph.graph_decode);
    EXPECT_FALSE(eager.graph_decode);
    EXPECT_EQ(graph.sequences[0].tokens, eager.sequences[0].tokens) << at::toString(dtype);
  }
}

}  // namespace
}  // namespace kvforge
