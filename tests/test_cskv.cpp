// CSKV: factorizations, the bi-branch low-rank cache, quantization-aware training and the artifact.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>

#include "checkpoints/artifact.h"
#include "policies/cache_plan.h"
#include "policies/cskv.h"
#include "policies/policy.h"
#include "runtime/generate.h"
#include "runtime/model_loader.h"
#include "runtime/quantized_kv_cache.h"
#include "runtime/rope.h"
#include "test_util.h"
#include "trainers/cskv/factorization.h"
#include "trainers/cskv/fit.h"
#include "trainers/cskv/layer_inputs.h"
#include "trainers/cskv/reconstruction.h"

namespace kvforge {
namespace {

using cskv::LowRankPair;

at::Tensor product(const LowRankPair& pair) { return at::mm(pair.up, pair.down); }

// Correlated inputs [tokens, in] with unequal channel scales, as attention inputs have.
at::Tensor correlated_inputs(int64_t tokens, int64_t in, uint64_t seed) {
  at::manual_seed(seed);
  const at::Tensor mixing = at::randn({in, in}, at::kDouble) / std::sqrt(static_cast<double>(in));
  const at::Tensor scales = at::exp(at::randn({in}, at::kDouble));
  return at::mm(at::randn({tokens, in}, at::kDouble), mixing) * scales;
}

double data_error(const at::Tensor& weight, const LowRankPair& pair, const at::Tensor& inputs) {
  const at::Tensor x = inputs.to(at::kFloat);
  return (at::mm(x, weight.to(at::kFloat).t()) - at::mm(at::mm(x, pair.down.t()), pair.up.t()))
      .square()
      .sum()
      .item<double>();
}

TEST(CskvFactorization, FullRankReproducesTheProjection) {
  at::manual_seed(3);
  const at::Tensor weight = at::randn({64, 192});  // K or V of the tiny model: [kv_heads·head_dim, hidden]
  const at::Tensor inputs = correlated_inputs(512, 192, 4);
  const at::Tensor scale = inputs.abs().mean(0);
  for (const LowRankPair& pair : {cskv::svd_factors(weight, 64), cskv::svd_factors(weight, 64, scale),
                                  cskv::whitened_factors(weight, 64, at::mm(inputs.t(), inputs) / 512)}) {
    EXPECT_EQ(pair.down.sizes(), (std::vector<int64_t>{64, 192}));
    EXPECT_EQ(pair.up.sizes(), (std::vector<int64_t>{64, 64}));
    EXPECT_LT((product(pair) - weight).abs().max().item<double>(), 1e-5);
  }
  EXPECT_THROW(cskv::svd_factors(weight, 65), std::invalid_argument);
}

TEST(CskvFactorization, AsvdWithUnitScalesIsPlainSvd) {
  at::manual_seed(5);
  const at::Tensor weight = at::randn({64, 192});
  const at::Tensor unit = cskv::svd_factors(weight, 16, at::ones({192})).down;
  const LowRankPair plain = cskv::svd_factors(weight, 16);
  EXPECT_TRUE(at::allclose(unit, plain.down, 1e-6, 1e-6));
  EXPECT_TRUE(at::allclose(cskv::svd_factors(weight, 16, at::ones({192})).up, plain.up, 1e-6, 1e-6));
  // Non-unit scales change the factorization (so the test above can fail).
  EXPECT_FALSE(at::allclose(cskv::svd_factors(weight, 16, at::rand({192}) + 0.1).down, plain.down, 1e-3, 1e-3));
}

TEST(CskvFactorization, ErrorNeverGrowsWithRankAndWhiteningIsTheDataOptimum) {
  at::manual_seed(7);
  const at::Tensor weight = at::randn({64, 192});
  const at::Tensor inputs = correlated_inputs(1024, 192, 8);
  const at::Tensor moment = at::mm(inputs.t(), inputs) / 1024;
  double previous_plain = 1e300, previous_data = 1e300;
  for (int64_t rank = 1; rank <= 64; rank += 3) {
    const LowRankPair plain = cskv::svd_factors(weight, rank), whitened = cskv::whitened_factors(weight, rank, moment);
    const double plain_error = (product(plain) - weight).square().sum().item<double>();
    const double whitened_data = data_error(weight, whitened, inputs);
    EXPECT_LE(plain_error, previous_plain * (1 + 1e-6) + 1e-9) << rank;
    EXPECT_LE(whitened_data, previous_data * (1 + 1e-6) + 1e-9) << rank;
    previous_plain = plain_error;
    previous_data = whitened_data;
    // On the data the loss is measured on, the whitened factors beat plain and activation-aware SVD.
    if (rank < 64) {
      EXPECT_LT(whitened_data, data_error(weight, plain, inputs)) << rank;
      EXPECT_LT(whitened_data, data_error(weight, cskv::svd_factors(weight, rank, inputs.abs().mean(0)), inputs))
          << rank;
    }
  }
  EXPECT_EQ(cskv::rank_for_density(0.25, 128, 8), 256);  // int(0.25·128)·8, the reference's rule
  EXPECT_EQ(cskv::rank_for_density(0.2, 64, 2), 24);
  EXPECT_EQ(cskv::rank_for_density(0.2, 64, 2, 4), 24);
  EXPECT_EQ(cskv::rank_for_density(0.2, 64, 2, 8), 16);
}

TEST(CskvQuantization, SixteenBitsIsTheIdentityAndLowerBitsMatchTheCachesCodes) {
  at::manual_seed(9);
  const at::Tensor latents = at::randn({2, 70, 24}).requires_grad_(true);
  const cskv::LatentQuantization none{16, 32, 2}, four{4, 32, 2};
  EXPECT_TRUE(at::equal(cskv::fake_quantize_key_latents(latents, none), latents));
  EXPECT_TRUE(at::equal(cskv::fake_quantize_value_latents(latents, none), latents));
  const at::Tensor keys = cskv::fake_quantize_key_latents(latents, four);
  // The first two groups of 32 tokens hold the cache's dequantized codes; the partial third waits exact.
  const at::Tensor group = latents.detach().narrow(1, 32, 32).unsqueeze(1);
  const at::Tensor stored = dequantize_keys_per_channel(quantize_keys_per_channel(group, 4), 4, at::kFloat).squeeze(1);
  EXPECT_TRUE(at::allclose(keys.narrow(1, 32, 32), stored, 1e-6, 1e-6));
  EXPECT_TRUE(at::equal(keys.narrow(1, 64, 6), latents.narrow(1, 64, 6)));
  const double key_error = (keys - latents).abs().max().item<double>();
  EXPECT_GT(key_error, 1e-3);  // it quantizes
  const at::Tensor range = latents.detach().narrow(1, 0, 64).reshape({2, 2, 32, 24});
  EXPECT_LE(key_error, ((range.amax(2) - range.amin(2)) / 15).max().item<double>() / 2 + 1e-3);
  const at::Tensor values = cskv::fake_quantize_value_latents(latents, four);
  EXPECT_GT((values - latents).abs().max().item<double>(), 1e-3);
  // Straight-through: the gradient passes unchanged.
  (keys.sum() + 2 * values.sum()).backward();
  EXPECT_TRUE(at::allclose(latents.grad(), at::full_like(latents, 3.0)));
}

// The tiny model's factors at `rank` (plain SVD), as the cache holds them.
std::shared_ptr<const LowRankFactors> tiny_factors(int64_t rank) {
  LoadedModel& loaded = testing::tiny_base_model();
  cskv::FitOptions options;
  options.init = cskv::Init::kSvd;
  options.key_rank = options.value_rank = rank;
  std::vector<LowRankLayer> layers = cskv::initial_factors(loaded.model, options, {});
  for (LowRankLayer& layer : layers)
    for (at::Tensor* tensor : {&layer.key_down, &layer.key_up, &layer.value_down, &layer.value_up})
      *tensor = tensor->detach();
  return std::make_shared<const LowRankFactors>(std::move(layers));
}

// Logits of a 40-token prompt and 8 decode steps through `cache`.
at::Tensor prompt_and_decode(KVCache& cache) {
  LoadedModel& loaded = testing::tiny_base_model();
  torch::NoGradGuard no_grad;
  at::manual_seed(41);
  const at::Tensor ids = at::randint(0, 256, {2, 40}, at::kLong), fed = at::randint(0, 256, {2, 8}, at::kLong);
  std::vector<at::Tensor> steps{loaded.model->forward(ids, at::arange(40).repeat({2, 1}), &cache)};
  for (int64_t t = 0; t < 8; ++t)
    steps.push_back(loaded.model->forward(fed.narrow(1, t, 1), at::full({2, 1}, 40 + t, at::kLong), &cache));
  return at::cat(steps, 1);
}

// capacity 0: buffers grow by doubling from the first step (the logit tests exercise that growth).
std::unique_ptr<KVCache> low_rank_cache(std::shared_ptr<const LowRankFactors> factors, LowRankCacheOptions options,
                                        int64_t capacity = 0) {
  const ModelConfig& config = testing::tiny_base_model().config;
  return std::make_unique<LowRankKVCache>(std::move(factors), options, 2, config.num_kv_heads, config.head_dim,
                                          rope_inverse_frequencies(config.rope, config.head_dim), at::kFloat, 0,
                                          capacity);
}

TEST(LowRankCache, WindowCoveringTheSequenceGivesTheBaseModelsLogits) {
  auto full = make_full_cache(testing::tiny_base_model().model, 2, 48);
  const at::Tensor reference = prompt_and_decode(*full);
  auto covering = low_rank_cache(tiny_factors(8), {48, 32, 16});
  EXPECT_TRUE(at::allclose(prompt_and_decode(*covering), reference, 1e-6, 1e-6));
  EXPECT_EQ(covering->length(0), 48);
  // A short window over rank-8 latents changes the decode logits (the prefill still attends exactly).
  auto short_window = low_rank_cache(tiny_factors(8), {4, 32, 16});
  const at::Tensor compressed = prompt_and_decode(*short_window);
  EXPECT_TRUE(at::allclose(compressed.narrow(1, 0, 40), reference.narrow(1, 0, 40), 1e-6, 1e-6));
  EXPECT_GT((compressed.narrow(1, 40, 8) - reference.narrow(1, 40, 8)).abs().max().item<double>(), 1e-2);
}

TEST(LowRankCache, FullRankLatentsRebuildKeysAtTheirTruePositions) {
  // Full rank (64 = kv_heads·head_dim) rebuilds K and V up to rounding, so with a 2-token window the decode logits
  // stay those of the base model only if RoPE is reapplied at each token's own position.
  auto full = make_full_cache(testing::tiny_base_model().model, 2, 48);
  const at::Tensor reference = prompt_and_decode(*full);
  auto cache = low_rank_cache(tiny_factors(64), {2, 32, 16});
  EXPECT_TRUE(at::allclose(prompt_and_decode(*cache), reference, 1e-4, 1e-4));
  auto* low_rank = dynamic_cast<LowRankKVCache*>(cache.get());
  EXPECT_EQ(low_rank->exact_tokens(0), 2);
  // Packed 8-bit latents stay close; 2-bit ones do not.
  auto eight = low_rank_cache(tiny_factors(64), {2, 16, 8});
  const double eight_error = (prompt_and_decode(*eight) - reference).abs().max().item<double>();
  auto two = low_rank_cache(tiny_factors(64), {2, 16, 2});
  const double two_error = (prompt_and_decode(*two) - reference).abs().max().item<double>();
  EXPECT_LT(eight_error, 0.1);
  EXPECT_GT(two_error, 2 * eight_error);
  EXPECT_EQ(dynamic_cast<LowRankKVCache*>(eight.get())->quantized_tokens(0), 48);  // three whole groups of 16
}

TEST(LowRankCache, BytesAreTheLatentsPlusTheWindow) {
  const ModelConfig& config = testing::tiny_base_model().config;
  const int64_t layers = config.num_layers, width = config.num_kv_heads * config.head_dim;
  auto cache = low_rank_cache(tiny_factors(16), {6, 32, 16}, /*capacity=*/48);
  prompt_and_decode(*cache);
  // 48 tokens × (16 + 16) fp32 latents + 6 exact tokens of K and V, per sequence and layer
  EXPECT_EQ(cache->bytes(), layers * 2 * (48 * 32 * 4 + 6 * 2 * width * 4));
  auto packed = low_rank_cache(tiny_factors(16), {6, 16, 4}, /*capacity=*/48);
  prompt_and_decode(*packed);
  // 48 tokens = 3 whole key groups of 16: 4-bit codes + an fp16 scale and minimum per channel per group (keys),
  // per token per KV head's 8 channels (values), and the emptied buffers a waiting group fills (16 slots, fp32)
  const int64_t keys = 3 * (16 * 16 / 2 + 2 * 16 * 2), values = 48 * (16 / 2 + 2 * 2 * 2), waiting = 2 * 16 * 16 * 4;
  EXPECT_EQ(packed->bytes(), layers * 2 * (keys + values + waiting + 6 * 2 * width * 4));
  EXPECT_LT(packed->bytes(), cache->bytes());
}

TEST(CskvTraining, ReducesTheHeldOutErrorBelowItsInitialisation) {
  LoadedModel& loaded = testing::tiny_base_model();
  cskv::FitOptions options;
  options.init = cskv::Init::kSvd;
  options.key_rank = options.value_rank = 8;
  std::vector<LowRankLayer> factors = cskv::initial_factors(loaded.model, options, {});
  cskv::ReconstructionConfig config;
  config.batches = [&](uint64_t seed, int64_t step, int64_t micro_batch) {
    TaskMixture mixture;
    mixture.tasks = {"passkey", "arithmetic"};
    mixture.min_tokens = mixture.max_tokens = 128;
    mixture.seed = seed;
    return make_task_batch(mixture, *loaded.tokenizer, 256, 257, step, micro_batch, 2);
  };
  config.quantization = {4, 32, loaded.config.num_kv_heads};
  cskv::ReconstructionObjective objective(loaded.model, factors, config);
  const at::Tensor before = objective.relative_errors(2);
  torch::optim::Adam optimizer(objective.trainable_parameters(), torch::optim::AdamOptions(3e-3));
  for (int64_t step = 0; step < 25; ++step) {
    optimizer.zero_grad();
    MicroBatchLoss loss = objective.micro_batch_loss(step, 0);
    loss.loss.backward();
    optimizer.step();
  }
  const at::Tensor after = objective.relative_errors(2);
  EXPECT_EQ(after.sizes(), (std::vector<int64_t>{3, 3}));
  EXPECT_LT(after.sum().item<double>(), 0.95 * before.sum().item<double>()) << before << after;
  EXPECT_TRUE((after > 0).all().item<bool>());
}

TEST(CskvTraining, KeyLossAfterRopeEqualsTheLossBeforeIt) {
  // RoPE rotates pairs of channels, so CSKV's post-RoPE key loss is its pre-RoPE loss: the whitened factors,
  // which minimise the pre-RoPE loss in closed form, minimise the trained objective too.
  at::manual_seed(13);
  const at::Tensor a = at::randn({2, 2, 30, 32}, at::kDouble), b = at::randn({2, 2, 30, 32}, at::kDouble);
  const RopeAngles angles = rope_angles(rope_inverse_frequencies({}, 32), at::arange(30).repeat({2, 1}), at::kDouble);
  EXPECT_NEAR((apply_rope(a, angles) - apply_rope(b, angles)).square().sum().item<double>(),
              (a - b).square().sum().item<double>(), 1e-6 * (a - b).square().sum().item<double>());
}

TEST(CskvTraining, ScoreLossWeighsKeyErrorsByTheQueries) {
  // With M = c·I the score error is c times the squared error; with queries along one channel only that channel
  // counts, so an error elsewhere costs nothing.
  at::manual_seed(17);
  const at::Tensor e = at::randn({2, 2, 5, 8});
  const at::Tensor identity = at::eye(8).unsqueeze(0).repeat({2, 1, 1}) * 3;
  const at::Tensor weighted = (at::matmul(e, identity.unsqueeze(0)) * e).sum(-1);
  EXPECT_TRUE(at::allclose(weighted, 3 * e.square().sum(-1)));
  LoadedModel& loaded = testing::tiny_base_model();
  const auto& attention = loaded.model->model->layers[0]->as<DecoderLayer>()->self_attn;
  const at::Tensor x = at::randn({2, 20, loaded.config.hidden_size});
  const at::Tensor positions = at::arange(20).repeat({2, 1});
  const at::Tensor moment = cskv::query_moment(attention->q_proj->weight, x, positions, loaded.model->inv_freq,
                                               loaded.config.num_heads, loaded.config.num_kv_heads);
  ASSERT_EQ(moment.sizes(), (std::vector<int64_t>{2, 32, 32}));
  EXPECT_NEAR(moment[0].trace().item<double>(), 32, 1e-3);  // scaled to trace head_dim
  EXPECT_TRUE(at::allclose(moment, moment.transpose(1, 2), 1e-5, 1e-5));
  EXPECT_GE(at::linalg_eigvalsh(moment).min().item<double>(), -1e-4);  // a second moment: positive semidefinite
  cskv::FitOptions options;
  options.init = cskv::Init::kSvd;
  options.key_rank = options.value_rank = 8;
  const std::vector<LowRankLayer> factors = cskv::initial_factors(loaded.model, options, {});
  const cskv::LayerError plain = cskv::layer_error(factors[0], attention->k_proj->weight, attention->v_proj->weight, x,
                                                   positions, loaded.model->inv_freq, 2, {});
  const cskv::LayerError scored = cskv::layer_error(factors[0], attention->k_proj->weight, attention->v_proj->weight, x,
                                                    positions, loaded.model->inv_freq, 2, {}, moment);
  EXPECT_TRUE(at::allclose(plain.value_error, scored.value_error));  // values are unaffected
  EXPECT_GT(std::abs((scored.key_error / scored.key_energy - plain.key_error / plain.key_energy).item<double>()),
            1e-4);  // anisotropic queries weigh the channels differently
}

TEST(CskvArtifact, RoundTripsIntoThePolicyAndNamesMalformedTensors) {
  LoadedModel& loaded = testing::tiny_base_model();
  cskv::FitOptions options;
  options.init = cskv::Init::kSvd;
  options.key_rank = 8;
  options.value_rank = 16;
  options.bits = 4;
  const std::vector<LowRankLayer> factors = cskv::initial_factors(loaded.model, options, {});
  const std::string dir = testing::make_temp_dir("cskv-artifact");
  write_artifact(dir + "/c.safetensors", cskv::cskv_artifact(factors, options, at::full({3, 2}, 0.1), loaded.config,
                                                             "method: cskv\n", {{"steps", 0}}));
  auto artifact = std::make_shared<const Artifact>(read_artifact(dir + "/c.safetensors"));
  const std::vector<PolicySpec> specs = policies_from_artifact(artifact);
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].label.rfind("cskv (svd, ", 0), 0u) << specs[0].label;
  EXPECT_EQ(specs[0].parameters.at("bits"), 4);
  const CachePlan plan = plan_cache(specs[0], loaded.config, 100);
  ASSERT_EQ(plan.layout, CacheLayout::kLowRank);
  EXPECT_EQ(plan.low_rank.factors->value_rank(2), 16);
  EXPECT_TRUE(at::equal(plan.low_rank.factors->cpu()[1].key_up, factors[1].key_up.detach()));
  EXPECT_EQ(policies_from_artifact(artifact, "bits=16,window=8")[0].parameters.at("window"), 8);
  EXPECT_INPUT_ERROR(policies_from_artifact(artifact, "bits=3"), "bits");
  Artifact broken = *artifact;
  broken.tensors.erase("layers.1.key_up");
  EXPECT_INPUT_ERROR(cskv_factors(std::make_shared<const Artifact>(broken)), "c.safetensors", "layers.1.key_up");
}

// Qwen3 normalises each head's keys (k_norm, after k_proj's bias) before RoPE: full-rank factors rebuild the model's
// keys only through that norm, in the cache, in the trainer's objective, and in the artifact the policy reads.
TEST(LowRankCache, Qwen3RebuildsKeysThroughTheModelsKeyNorm) {
  torch::NoGradGuard no_grad;
  LoadedModel qwen = load_model(testing::fixture("qwen3"), at::kCPU, at::kFloat);
  const ModelConfig& config = qwen.config;
  cskv::FitOptions options;
  options.init = cskv::Init::kSvd;
  options.key_rank = options.value_rank = config.num_kv_heads * config.head_dim;  // full rank: 64 of hidden 64
  std::vector<LowRankLayer> layers = cskv::initial_factors(qwen.model, options, {});
  for (LowRankLayer& layer : layers) {
    ASSERT_TRUE(layer.key_norm.defined() && layer.key_bias.defined());
    for (at::Tensor* tensor : {&layer.key_down, &layer.key_up, &layer.value_down, &layer.value_up})
      *tensor = tensor->detach();
  }
  at::manual_seed(43);
  const at::Tensor ids = at::randint(3, config.vocab_size, {2, 30}, at::kLong);
  const at::Tensor fed = at::randint(3, config.vocab_size, {2, 6}, at::kLong);
  auto run = [&](KVCache& cache) {
    std::vector<at::Tensor> steps{qwen.model->forward(ids, at::arange(30).repeat({2, 1}), &cache)};
    for (int64_t t = 0; t < 6; ++t)
      steps.push_back(qwen.model->forward(fed.narrow(1, t, 1), at::full({2, 1}, 30 + t, at::kLong), &cache));
    return at::cat(steps, 1);
  };
  auto cache_of = [&](std::vector<LowRankLayer> factors) {
    LowRankCacheOptions cache_options{/*window=*/2, /*group=*/32, /*bits=*/16, config.rms_norm_eps};
    return LowRankKVCache(std::make_shared<const LowRankFactors>(std::move(factors)), cache_options, 2,
                          config.num_kv_heads, config.head_dim, rope_inverse_frequencies(config.rope, config.head_dim),
                          at::kFloat);
  };
  auto full = make_full_cache(qwen.model, 2, 36);
  const at::Tensor reference = run(*full);
  LowRankKVCache normed = cache_of(layers);
  const at::Tensor rebuilt = run(normed);
  EXPECT_LT((rebuilt - reference).abs().max().item<double>(), 1e-4 * reference.abs().max().item<double>());
  std::vector<LowRankLayer> unnormed = layers;
  for (LowRankLayer& layer : unnormed) layer.key_norm = at::Tensor();
  LowRankKVCache skipped = cache_of(unnormed);
  EXPECT_GT((run(skipped) - reference).abs().max().item<double>(), 1e-2) << "rebuilt keys need the key norm";

  // The trainer's key error compares normalised keys: zero at full rank, not at rank 8.
  const at::Tensor inputs = cskv::attention_inputs(qwen.model, ids, at::arange(30).repeat({2, 1}))[0];
  const auto& attention = qwen.model->model->layers[0]->as<DecoderLayer>()->self_attn;
  auto key_error = [&](const LowRankLayer& factors) {
    const cskv::LayerError error = cskv::layer_error(
        factors, attention->k_proj->weight, attention->v_proj->weight, inputs, at::arange(30).repeat({2, 1}),
        qwen.model->inv_freq, config.num_kv_heads, {16, 32, 2}, at::Tensor(), config.rms_norm_eps);
    return (error.key_error / error.key_energy).item<double>();
  };
  EXPECT_LT(key_error(layers[0]), 1e-8);
  LowRankLayer rank8 = layers[0];
  rank8.key_up = rank8.key_up.narrow(1, 0, 8).contiguous();
  rank8.key_down = rank8.key_down.narrow(0, 0, 8).contiguous();
  EXPECT_GT(key_error(rank8), 1e-2) << "rank 8 of 64 loses key energy";

  // The artifact carries the norm, and the policy refuses factors without one for this model.
  const std::string dir = testing::make_temp_dir("cskv-qwen3");
  write_artifact(dir + "/q.safetensors",
                 cskv::cskv_artifact(layers, options, at::full({2, 2}, 0.1), config, "method: cskv\n", {{"steps", 0}}));
  auto artifact = std::make_shared<const Artifact>(read_artifact(dir + "/q.safetensors"));
  const CachePlan plan = plan_cache(policies_from_artifact(artifact)[0], config, 30);
  EXPECT_TRUE(at::equal(plan.low_rank.factors->cpu()[1].key_norm, layers[1].key_norm));
  EXPECT_DOUBLE_EQ(plan.low_rank.options.key_norm_eps, config.rms_norm_eps);
  Artifact stripped = *artifact;
  stripped.tensors.erase("layers.1.key_norm");
  EXPECT_INPUT_ERROR(plan_cache(policies_from_artifact(std::make_shared<const Artifact>(stripped))[0], config, 30),
                     "q.safetensors", "layers.1.key_norm");
}

// On CUDA in bf16 the decode steps go through the low-rank kernel and agree with the CPU's fp32 rebuild path
// (small-base-gpu: head_dim 64, 3 query heads per KV head; rank 48 of 128, a 6-token exact window).
TEST(LowRankCacheOnCuda, DecodeKernelMatchesTheCpuRebuild) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (CI has none; run on the GPU machine)";
  torch::NoGradGuard no_grad;
  LoadedModel cpu = load_model(testing::fixture("../../models/small-base-gpu"), at::kCPU, at::kFloat);
  LoadedModel gpu =
      load_model(testing::fixture("../../models/small-base-gpu"), at::Device(at::kCUDA, 0), at::kBFloat16);
  cskv::FitOptions options;
  options.init = cskv::Init::kSvd;
  options.key_rank = options.value_rank = 48;
  std::vector<LowRankLayer> layers = cskv::initial_factors(cpu.model, options, {});
  for (LowRankLayer& layer : layers)
    for (at::Tensor* tensor : {&layer.key_down, &layer.key_up, &layer.value_down, &layer.value_up})
      *tensor = tensor->detach();
  auto factors = std::make_shared<const LowRankFactors>(std::move(layers));
  const ModelConfig& config = cpu.config;
  const at::Tensor inv_freq = rope_inverse_frequencies(config.rope, config.head_dim);
  LowRankKVCache cpu_cache(factors, {6, 32, 16}, 2, config.num_kv_heads, config.head_dim, inv_freq, at::kFloat);
  LowRankKVCache gpu_cache(factors, {6, 32, 16}, 2, config.num_kv_heads, config.head_dim, inv_freq,
                           at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16), config.num_heads);
  at::manual_seed(45);
  const int64_t prompt = 300, steps = 10;
  const at::Tensor ids = at::randint(0, 256, {2, prompt + steps}, at::kLong);
  at::Tensor positions = at::arange(prompt + steps, at::kLong).unsqueeze(0).repeat({2, 1});
  positions[1].narrow(0, 0, 20).fill_(-1);  // left padding in the second sequence
  cpu.model->forward(ids.narrow(1, 0, prompt), positions.narrow(1, 0, prompt), &cpu_cache);
  gpu.model->forward(ids.narrow(1, 0, prompt).cuda(), positions.narrow(1, 0, prompt).cuda(), &gpu_cache);
  for (int64_t t = prompt; t < prompt + steps; ++t) {
    const at::Tensor step_ids = ids.narrow(1, t, 1), step_positions = positions.narrow(1, t, 1);
    const at::Tensor expected = cpu.model->forward(step_ids, step_positions, &cpu_cache);
    const at::Tensor got =
        gpu.model->forward(step_ids.cuda(), step_positions.cuda(), &gpu_cache).to(at::kCPU, at::kFloat);
    EXPECT_LT(((got - expected).abs().max() / expected.abs().max()).item<double>(), 5e-2) << "step " << t;
  }
  EXPECT_EQ(gpu_cache.kernel_steps(), steps * config.num_layers);
  EXPECT_EQ(cpu_cache.kernel_steps(), 0);
}

}  // namespace
}  // namespace kvforge
