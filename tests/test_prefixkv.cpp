// PrefixKV: the threshold search hits its target and allocates by how concentrated each layer's attention is;
// the cache keeps sinks and the last token, tracks its fraction while decoding, and equals the base model at a
// full budget; calibration writes an artifact the policy reads back.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <numeric>
#include <random>
#include <set>

#include "policies/policy.h"
#include "policies/prefixkv.h"
#include "runtime/generate.h"
#include "runtime/model_loader.h"
#include "tests/test_util.h"
#include "trainers/prefixkv/budget_search.h"
#include "trainers/prefixkv/calibrate.h"

namespace kvforge {
namespace {

using prefixkv::allocate_evictions;

std::vector<std::vector<double>> random_importance(uint64_t seed, int64_t layers, int64_t tokens) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<double>> importance(layers, std::vector<double>(tokens));
  for (int64_t layer = 0; layer < layers; ++layer) {
    // Layers differ in how peaked their attention is: a larger exponent concentrates it on fewer tokens.
    std::exponential_distribution<double> draw(1.0);
    for (double& value : importance[layer]) value = std::pow(draw(rng), 1.0 + layer);
  }
  return importance;
}

TEST(PrefixKvSearch, EvictedTotalHitsTheTargetExactly) {
  for (uint64_t seed : {1u, 2u, 3u}) {
    const auto importance = random_importance(seed, 6, 301);
    for (double fraction : {0.05, 0.2, 0.5, 0.8, 0.97}) {
      const prefixkv::Allocation allocation = allocate_evictions(importance, fraction, /*protected_tokens=*/5);
      const int64_t total = std::accumulate(allocation.evicted.begin(), allocation.evicted.end(), int64_t{0});
      EXPECT_EQ(total, std::min<int64_t>(std::llround(fraction * 6 * 301), 6 * 296)) << seed << " " << fraction;
      for (int64_t evicted : allocation.evicted) {
        EXPECT_GE(evicted, 0);
        EXPECT_LE(evicted, 301 - 5);  // sinks and the last token stay
      }
    }
  }
}

TEST(PrefixKvSearch, EvictedCountFallsAsTheThresholdRises) {
  const auto importance = random_importance(9, 4, 257);
  for (const auto& scores : importance) {
    const prefixkv::CumulativeImportance layer = prefixkv::cumulative_importance(scores);
    int64_t previous = prefixkv::evicted_at(layer, 0.0, 5);
    EXPECT_EQ(previous, 257 - 1 - 5);  // p = 0: one token reaches it
    for (int step = 1; step <= 1000; ++step) {
      const int64_t evicted = prefixkv::evicted_at(layer, step / 1000.0, 5);
      EXPECT_LE(evicted, previous) << "p = " << step / 1000.0;
      previous = evicted;
    }
    EXPECT_EQ(previous, 0);  // p = 1 needs every token
  }
}

TEST(PrefixKvSearch, IdenticalLayersGetAUniformAllocation) {
  const std::vector<std::vector<double>> importance(5, random_importance(4, 1, 200)[0]);
  const prefixkv::Allocation allocation = allocate_evictions(importance, 0.63, 5);
  const auto [lowest, highest] = std::minmax_element(allocation.evicted.begin(), allocation.evicted.end());
  EXPECT_LE(*highest - *lowest, 1);  // equal up to distributing the rounding remainder
  EXPECT_EQ(std::accumulate(allocation.evicted.begin(), allocation.evicted.end(), int64_t{0}),
            std::llround(0.63 * 1000));
}

TEST(PrefixKvSearch, ConcentratedAttentionGivesUpMoreOfItsCache) {
  const auto importance = random_importance(5, 6, 300);  // layer 5 is the most peaked, layer 0 the flattest
  const prefixkv::Allocation allocation = allocate_evictions(importance, 0.5, 5);
  EXPECT_GT(allocation.evicted[5], allocation.evicted[0]);
  for (size_t layer = 1; layer < allocation.evicted.size(); ++layer)
    EXPECT_GE(allocation.evicted[layer] + 10, allocation.evicted[layer - 1]) << layer;  // near-monotone in peakedness
}

std::unique_ptr<KVCache> uniform_cache(const std::string& spec, int64_t prompt_tokens, int64_t batch = 1) {
  const ModelConfig& config = testing::tiny_base_model().config;
  return make_cache(plan_cache(parse_policy(spec), config, prompt_tokens), config, batch, prompt_tokens + 8,
                    at::TensorOptions().dtype(at::kFloat));
}

// Prefill `prompt_tokens` fresh random tokens, then decode `steps` random tokens teacher-forced.
void run_tokens(KVCache& cache, int64_t prompt_tokens, int64_t steps, uint64_t seed) {
  torch::NoGradGuard no_grad;
  Transformer& model = testing::tiny_base_model().model;
  at::manual_seed(static_cast<int64_t>(seed));
  model->forward(at::randint(0, 256, {1, prompt_tokens}, at::kLong), at::arange(prompt_tokens).unsqueeze(0), &cache,
                 true);
  for (int64_t t = 0; t < steps; ++t)
    model->forward(at::randint(0, 256, {1, 1}, at::kLong), at::full({1, 1}, prompt_tokens + t, at::kLong), &cache,
                   true);
}

TEST(PrefixKvCache, KeepsSinksAndTheLastTokenAndOneTokenSetPerLayer) {
  for (const char* spec : {"uniform:budget=0.1,window=0", "uniform:budget=0.1"}) {  // every query / last 16 score
    auto cache = uniform_cache(spec, 200);
    run_tokens(*cache, 200, 0, 11);
    auto& selective = dynamic_cast<SelectiveKVCache&>(*cache);
    for (int64_t layer = 0; layer < testing::tiny_base_model().config.num_layers; ++layer) {
      EXPECT_EQ(cache->length(layer), 20);
      const at::Tensor positions = selective.positions(layer)[0];  // [kv_heads, slots]
      for (int64_t head = 0; head < positions.size(0); ++head) {
        std::set<int64_t> kept;
        for (int64_t slot = 0; slot < positions.size(1); ++slot) kept.insert(positions[head][slot].item<int64_t>());
        for (int64_t always : {0, 1, 2, 3, 199})
          EXPECT_TRUE(kept.count(always)) << spec << " " << layer << " " << always;
        EXPECT_TRUE(at::equal(positions[head], positions[0])) << "heads of a layer keep the same tokens";
        EXPECT_TRUE(at::all(positions[head].diff() > 0).item<bool>()) << "survivors stay in position order";
      }
    }
  }
  // per_head=1 lets each KV head choose: on random tokens the two heads disagree somewhere.
  auto each = uniform_cache("uniform:budget=0.1,window=0,per_head=1", 200);
  run_tokens(*each, 200, 0, 11);
  bool differ = false;
  for (int64_t layer = 0; layer < testing::tiny_base_model().config.num_layers; ++layer) {
    const at::Tensor positions = dynamic_cast<SelectiveKVCache&>(*each).positions(layer)[0];
    differ = differ || !at::equal(positions[0], positions[1]);
  }
  EXPECT_TRUE(differ);
}

TEST(PrefixKvCache, DecodeLengthTracksTheLayersFraction) {
  auto cache = uniform_cache("uniform:budget=0.3,tail=10", 100);
  run_tokens(*cache, 100, 37, 12);
  // 30 slots after prefill, then ceil(0.3 × generated) more.
  EXPECT_EQ(cache->length(0), 30 + 12);
  const at::Tensor positions = dynamic_cast<SelectiveKVCache&>(*cache).positions(0)[0][0];
  // The newest tokens are never the ones dropped: the last 10 + every generated-but-not-yet-reached slot stay.
  EXPECT_EQ(positions[-1].item<int64_t>(), 136);
  EXPECT_TRUE(at::all(positions.diff() > 0).item<bool>());
}

Artifact budget_artifact(const std::vector<double>& budgets, const std::vector<std::vector<double>>& rows) {
  const ModelConfig& config = testing::tiny_base_model().config;
  prefixkv::Calibration calibration;
  calibration.budgets = budgets;
  calibration.retained = rows;
  calibration.retained_spread = std::vector<std::vector<double>>(rows.size(), std::vector<double>(rows[0].size(), 0));
  calibration.samples.push_back({100, {}, {}});
  return prefixkv::calibration_artifact(calibration, {budgets, 4}, config, "method: prefixkv\n");
}

TEST(PrefixKvPolicy, FullBudgetGivesTheBaseModelsLogits) {
  LoadedModel& loaded = testing::tiny_base_model();
  auto artifact = std::make_shared<const Artifact>(budget_artifact({1.0}, {{1.0, 1.0, 1.0}}));
  const std::vector<PolicySpec> specs = policies_from_artifact(artifact);
  ASSERT_EQ(specs.size(), 1u);
  torch::NoGradGuard no_grad;
  at::manual_seed(31);
  const at::Tensor ids = at::randint(0, 256, {1, 60}, at::kLong), fed = at::randint(0, 256, {1, 5}, at::kLong);
  auto logits = [&](KVCache& cache) {
    std::vector<at::Tensor> steps{loaded.model->forward(ids, at::arange(60).unsqueeze(0), &cache, true)};
    for (int64_t t = 0; t < 5; ++t)
      steps.push_back(loaded.model->forward(fed.narrow(1, t, 1), at::full({1, 1}, 60 + t, at::kLong), &cache, true));
    return at::cat(steps, 1);
  };
  auto full = make_full_cache(loaded.model, 1, 65);
  auto cache = make_cache(plan_cache(specs[0], loaded.config, 60), loaded.config, 1, 65, at::kFloat);
  EXPECT_TRUE(at::equal(logits(*cache), logits(*full)));
  EXPECT_EQ(cache->length(0), 65);
}

TEST(PrefixKvPolicy, ArtifactBudgetsBecomePoliciesAndPerLayerPlans) {
  const ModelConfig& config = testing::tiny_base_model().config;
  const std::string dir = testing::make_temp_dir("prefixkv-artifact");
  write_artifact(dir + "/p.safetensors", budget_artifact({0.2, 0.5}, {{0.4, 0.15, 0.05}, {0.8, 0.4, 0.3}}));
  auto artifact = std::make_shared<const Artifact>(read_artifact(dir + "/p.safetensors"));
  const std::vector<PolicySpec> all = policies_from_artifact(artifact);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].label, "prefixkv:budget=0.2");
  EXPECT_EQ(all[1].label, "prefixkv:budget=0.5");
  const std::vector<PolicySpec> one = policies_from_artifact(artifact, "budget=0.5,window=8");
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].label, "prefixkv:budget=0.5,window=8");
  const CachePlan plan = plan_cache(all[0], config, 1000);
  ASSERT_EQ(plan.layers.size(), 3u);
  EXPECT_EQ(plan.layers[0].budget_tokens, 400);
  EXPECT_EQ(plan.layers[1].budget_tokens, 150);
  EXPECT_EQ(plan.layers[2].budget_tokens, 50);
  EXPECT_DOUBLE_EQ(plan.layers[2].decode_keep_fraction, 0.05);
  EXPECT_INPUT_ERROR(policies_from_artifact(artifact, "budget=0.3"), "p.safetensors", "0.2, 0.5");
  EXPECT_INPUT_ERROR(parse_policy("prefixkv:budget=0.2"), "--artifact");
}

TEST(PrefixKvCalibration, MeetsEveryBudgetOnTheTinyModel) {
  LoadedModel& loaded = testing::tiny_base_model();
  std::vector<std::vector<int64_t>> prompts;
  std::mt19937_64 rng(17);
  for (int64_t length : {96, 130}) {
    std::vector<int64_t> prompt(length);
    for (int64_t& token : prompt) token = static_cast<int64_t>(rng() % 256);
    prompts.push_back(prompt);
  }
  const prefixkv::Calibration calibration = prefixkv::calibrate(loaded.model, prompts, {{0.3, 0.6}, 4});
  ASSERT_EQ(calibration.samples.size(), 2u);
  for (size_t k = 0; k < 2; ++k) {
    for (const prefixkv::SampleResult& sample : calibration.samples) {
      const double mean = std::accumulate(sample.retained[k].begin(), sample.retained[k].end(), 0.0) / 3;
      EXPECT_NEAR(mean, calibration.budgets[k], 0.5 / static_cast<double>(sample.tokens));
    }
    for (double fraction : calibration.retained[k]) EXPECT_GT(fraction, 5.0 / 130 - 1e-9);  // sinks + last stay
  }
  // Importance is a distribution per query: each layer's profile sums to the number of queries.
  const auto importance = prefixkv::layer_importance(loaded.model, prompts[0]);
  ASSERT_EQ(importance.size(), 3u);
  // Each query's weights are a float32 softmax, so a row sums to 1 only within float32 rounding (its error depends on
  // the CPU's summation order): the bound is relative to the total, 1e-5 of it, far below one query's weight of 1.
  constexpr double kQueries = 96.0;
  for (const auto& layer : importance)
    EXPECT_NEAR(std::accumulate(layer.begin(), layer.end(), 0.0), kQueries, 1e-5 * kQueries);
  EXPECT_INPUT_ERROR(prefixkv::calibrate(loaded.model, prompts, {{1.5}, 4}), "budgets", "(0, 1]");
}

}  // namespace
}  // namespace kvforge
