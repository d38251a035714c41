// Training-free cache policies: each reproduces the full cache exactly when its budget covers the
// sequence, and keeps exactly what it claims (tokens, positions, bytes) when it does not.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <set>
#include <tuple>

#include "policies/policy.h"
#include "runtime/generate.h"
#include "runtime/model_loader.h"
#include "runtime/quantized_kv_cache.h"
#include "runtime/rope.h"
#include "runtime/selective_kv_cache.h"
#include "tests/test_util.h"

namespace kvforge {
namespace {

using testing::fixture;

// Logits of a left-padded batch: the prompt in one prefill, then `steps` fed tokens (teacher forcing,
// so every cache sees the same inputs). Returns [steps + 1, batch, vocab].
at::Tensor cached_logits(Transformer& model, KVCache& cache, const at::Tensor& ids, const at::Tensor& positions,
                         const at::Tensor& fed) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> steps{model->forward(ids, positions, &cache, /*last_only=*/true).squeeze(1)};
  at::Tensor next = std::get<0>(positions.max(1, /*keepdim=*/true)) + 1;
  for (int64_t t = 0; t < fed.size(1); ++t)
    steps.push_back(model->forward(fed.narrow(1, t, 1), next + t, &cache, /*last_only=*/true).squeeze(1));
  return at::stack(steps);
}

struct Batch {
  at::Tensor ids, positions, fed;
};

// Two fresh random prompts of different lengths (the shorter left-padded) and 6 tokens to feed.
Batch random_batch(int64_t seed, int64_t longest) {
  at::manual_seed(seed);
  const int64_t vocab = 256;
  Batch batch;
  batch.ids = at::randint(0, vocab, {2, longest}, at::kLong);
  batch.positions = at::arange(longest, at::kLong).unsqueeze(0).repeat({2, 1});
  const int64_t pad = 5;
  batch.positions[1].narrow(0, 0, pad).fill_(-1);
  batch.positions[1].narrow(0, pad, longest - pad).copy_(at::arange(longest - pad, at::kLong));
  batch.fed = at::randint(0, vocab, {2, 6}, at::kLong);
  return batch;
}

std::unique_ptr<KVCache> cache_for(const std::string& spec, int64_t prompt_tokens, int64_t batch = 2,
                                   const ModelConfig& config = testing::tiny_base_model().config) {
  return make_cache(plan_cache(parse_policy(spec), config, prompt_tokens), config, batch, prompt_tokens + 8,
                    at::TensorOptions().dtype(at::kFloat));
}

// The models every policy is checked on: the built-in base model and the Qwen3 fixture (per-head q/k norms, biases
// on q/k/v/o, and a sliding-window layer that the caches must honour alongside their own eviction).
LoadedModel& identity_model(const std::string& name) {
  if (name == "tiny_base") return testing::tiny_base_model();
  static LoadedModel qwen3 = load_model(testing::fixture("qwen3"), at::kCPU, at::kFloat);
  return qwen3;
}

class FullBudgetIdentity : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

// A window, budget or full-precision residual covering the whole sequence leaves nothing to drop, so the
// logits equal the full cache's bit for bit at the prefill and at every decode step.
TEST_P(FullBudgetIdentity, LogitsEqualTheFullCache) {
  const auto& [model_name, spec] = GetParam();
  LoadedModel& loaded = identity_model(model_name);
  const Batch batch = random_batch(/*seed=*/21, /*longest=*/40);
  auto full = make_full_cache(loaded.model, 2, 48);
  at::Tensor expected = cached_logits(loaded.model, *full, batch.ids, batch.positions, batch.fed);
  auto cache = cache_for(spec, 40, 2, loaded.config);
  at::Tensor got = cached_logits(loaded.model, *cache, batch.ids, batch.positions, batch.fed);
  EXPECT_TRUE(at::equal(got, expected)) << spec << ": max difference " << (got - expected).abs().max().item<double>();
  EXPECT_EQ(cache->length(0), 46);
}

INSTANTIATE_TEST_SUITE_P(
    Policies, FullBudgetIdentity,
    ::testing::Combine(::testing::Values("tiny_base", "qwen3"),
                       ::testing::Values("full", "streaming:window=64", "snapkv:budget=64", "snapkv:budget=1",
                                         "pyramidkv:budget=1000", "h2o:budget=64", "tova:budget=64", "expected:budget=64", "kivi:bits=2,residual=64",
                                         "kivi:bits=4,residual=46", "uniform:budget=1",
                                         "uniform:budget=1,window=8,kernel=3", "uniform:budget=1,per_head=1,window=0")),
    [](const auto& info) {
      std::string name = std::get<0>(info.param) + "_" + std::get<1>(info.param);
      for (char& c : name)
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
      return name;
    });

// The same tokens through an explicitly full plan and through generate() with no factory: same output.
TEST(FullBudgetIdentity, GenerateWithAFullBudgetPolicyMatchesFull) {
  LoadedModel& loaded = testing::tiny_base_model();
  const std::vector<int64_t> prompt =
      loaded.tokenizer->encode("The pass key is 4417. What is the pass key? The pass key is");
  GenerationOptions options;
  options.max_new_tokens = 10;
  const auto baseline = generate(loaded.model, {prompt}, options).sequences[0].tokens;
  const PolicySpec spec = parse_policy("snapkv:budget=1");
  const CachePlan plan = plan_cache(spec, loaded.config, static_cast<int64_t>(prompt.size()));
  auto factory = [&](int64_t batch, int64_t capacity) {
    return make_cache(plan, loaded.config, batch, capacity, at::TensorOptions().dtype(at::kFloat));
  };
  EXPECT_EQ(generate(loaded.model, {prompt}, options, nullptr, factory).sequences[0].tokens, baseline);
}

// The caches run on CUDA as on the CPU: every compressing policy gives the CPU's logits within fp32
// rounding, and in bf16 stays close (bf16 rounding can flip a 2-bit code or a top-k choice, so the bound
// is looser than bf16's own 1%).
TEST(PoliciesOnCuda, MatchTheCpuUnderCompression) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (CI has none; run on the GPU machine)";
  LoadedModel& cpu = testing::tiny_base_model();
  const Batch batch = random_batch(/*seed=*/31, /*longest=*/80);
  for (const std::string spec :
       {"streaming:budget=0.25", "snapkv:budget=0.25", "pyramidkv:budget=0.3", "h2o:budget=0.3",
        "kivi:bits=2,residual=16", "kivi:bits=4,residual=16", "uniform:budget=0.3",
        "uniform:budget=0.3,window=0,per_head=1", "heads:sparsity=0.5,sink=2,recent=6"}) {
    auto cpu_cache = cache_for(spec, 80);
    at::Tensor expected = cached_logits(cpu.model, *cpu_cache, batch.ids, batch.positions, batch.fed);
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      LoadedModel gpu = load_model(testing::fixture("../../models/tiny-base"), at::Device(at::kCUDA, 0), dtype);
      const PolicySpec policy = parse_policy(spec);
      auto cache = make_cache(plan_cache(policy, gpu.config, 80), gpu.config, 2, 88,
                              at::TensorOptions().dtype(dtype).device(at::kCUDA));
      at::Tensor got = cached_logits(gpu.model, *cache, batch.ids.cuda(), batch.positions.cuda(), batch.fed.cuda())
                           .to(at::kCPU, at::kFloat);
      const double error = ((got - expected).abs().max() / expected.abs().max()).item<double>();
      EXPECT_LE(error, dtype == at::kFloat ? 1e-4 : 0.15) << spec << " " << at::toString(dtype);
    }
  }
}

std::set<int64_t> held_positions(const SelectiveKVCache& cache, int64_t layer, int64_t sequence, int64_t head) {
  at::Tensor positions = cache.positions(layer)[sequence][head];
  std::set<int64_t> held;
  for (int64_t i = 0; i < positions.size(0); ++i) held.insert(positions[i].item<int64_t>());
  return held;
}

TEST(StreamingPolicy, KeepsSinkAndRecentWindowOnly) {
  LoadedModel& loaded = testing::tiny_base_model();
  const Batch batch = random_batch(/*seed=*/5, /*longest=*/60);
  auto cache = cache_for("streaming:sink=4,window=12", 60);
  cached_logits(loaded.model, *cache, batch.ids, batch.positions, batch.fed);
  auto& streaming = dynamic_cast<SelectiveKVCache&>(*cache);
  // Sequence 0 reached position 65 (60 prompt + 6 fed - 1); sequence 1 is 5 tokens shorter.
  for (int64_t layer = 0; layer < loaded.config.num_layers; ++layer) {
    for (int64_t head = 0; head < loaded.config.num_kv_heads; ++head) {
      std::set<int64_t> expected{0, 1, 2, 3};
      for (int64_t p = 54; p <= 65; ++p) expected.insert(p);
      EXPECT_EQ(held_positions(streaming, layer, 0, head), expected) << "layer " << layer;
      std::set<int64_t> shorter{0, 1, 2, 3};
      for (int64_t p = 49; p <= 60; ++p) shorter.insert(p);
      EXPECT_EQ(held_positions(streaming, layer, 1, head), shorter) << "layer " << layer;
    }
  }
  // bytes(): what is allocated, keys + values of 17 slots per head in fp32: the 16 held and the one a decode step
  // writes before it evicts; the 60-token prompt's buffers are not kept.
  const ModelConfig& config = loaded.config;
  EXPECT_EQ(cache->bytes(), config.num_layers * 2 * 2 * config.num_kv_heads * 17 * config.head_dim * 4);
}

// A streaming prefill sees what streaming decode sees: the prompt's last logits equal those of the same
// tokens fed one at a time through the same policy, for a short prompt (masked path) and one long enough for the
// banded path.
TEST(StreamingPolicy, PrefillMatchesTokenByTokenDecode) {
  LoadedModel& loaded = testing::tiny_base_model();
  torch::NoGradGuard no_grad;
  at::manual_seed(8);
  for (const int64_t tokens : {30, 200}) {
    at::Tensor ids = at::randint(0, 256, {1, tokens}, at::kLong);
    at::Tensor positions = at::arange(tokens, at::kLong).unsqueeze(0);
    auto prefill_cache = cache_for("streaming:sink=2,window=8", tokens, /*batch=*/1);
    at::Tensor prefill = loaded.model->forward(ids, positions, prefill_cache.get(), /*last_only=*/true);
    auto stepped_cache = cache_for("streaming:sink=2,window=8", tokens, /*batch=*/1);
    at::Tensor last;
    for (int64_t t = 0; t < tokens; ++t)
      last = loaded.model->forward(ids.narrow(1, t, 1), positions.narrow(1, t, 1), stepped_cache.get(), true);
    EXPECT_LE((prefill - last).abs().max().item<double>(), 1e-5 * prefill.abs().max().item<double>()) << tokens;
  }
}

// SnapKV on a hand-built layer: the observation window's queries point at chosen keys, which survive,
// while every head also keeps its window; budgets hold per head.
TEST(SnapKVPolicy, KeepsTheTokensTheObservationWindowAttendsTo) {
  at::manual_seed(4);
  const int64_t heads = 4, kv_heads = 2, head_dim = 64, tokens = 40, window = 4, budget = 7;
  SelectiveLayerOptions options;
  options.budget_tokens = budget;
  options.observation_window = window;
  options.recent_tokens = window;
  options.pool_kernel = 1;
  options.score = TokenScore::kObservationWindow;
  options.evict_during_decode = false;
  SelectiveKVCache cache({options}, 1, kv_heads, head_dim, at::TensorOptions().dtype(at::kFloat));
  at::Tensor keys = at::randn({1, kv_heads, tokens, head_dim});
  at::Tensor values = at::randn({1, kv_heads, tokens, head_dim});
  at::Tensor positions = at::arange(tokens, at::kLong).unsqueeze(0);
  // Head 0's query group looks at positions 3, 17, 25; head 1's at 0, 1, 2.
  const std::vector<std::vector<int64_t>> targets{{3, 17, 25}, {0, 1, 2}};
  at::Tensor queries = 0.01 * at::randn({1, heads, tokens, head_dim});
  for (int64_t kv = 0; kv < kv_heads; ++kv)
    for (int64_t q = 0; q < heads / kv_heads; ++q)
      for (int64_t t = tokens - window; t < tokens; ++t)
        for (int64_t target : targets[kv]) queries[0][kv * 2 + q][t] += 3.0 * keys[0][kv][target];
  cache.update(0, keys, values, positions);
  cache.after_attention(0, queries, positions);
  for (int64_t kv = 0; kv < kv_heads; ++kv) {
    std::set<int64_t> expected(targets[kv].begin(), targets[kv].end());
    for (int64_t t = tokens - window; t < tokens; ++t) expected.insert(t);
    EXPECT_EQ(held_positions(cache, 0, 0, kv), expected) << "kv head " << kv;
  }
  EXPECT_EQ(cache.length(0), budget);
  // Generated tokens are added, never evicted: SnapKV compresses the prompt once.
  cache.update(0, keys.narrow(2, 0, 1), values.narrow(2, 0, 1), at::full({1, 1}, tokens, at::kLong));
  cache.after_attention(0, queries.narrow(2, 0, 1), at::full({1, 1}, tokens, at::kLong));
  EXPECT_EQ(cache.length(0), budget + 1);
}

// The prompt's chunk is all a fresh cache holds, the same tokens for every KV head: every selective layout hands
// attention one row of positions for it, so the prefill runs fused instead of scoring each head's query-key pairs
// (which ran out of memory at 32k tokens); once the cache has evicted per head, the heads' own rows come back.
TEST(SelectivePolicies, PromptChunkAttendsWithOneRowOfPositionsThenPerHead) {
  const ModelConfig& config = testing::tiny_base_model().config;
  const int64_t tokens = 48, head_dim = config.head_dim, kv_heads = config.num_kv_heads;
  for (const char* spec : {"snapkv:budget=0.25", "pyramidkv:budget=0.25", "h2o:budget=0.25", "uniform:budget=0.25",
                           "streaming:budget=0.25"}) {
    std::unique_ptr<KVCache> cache = cache_for(spec, tokens, /*batch=*/1);
    at::manual_seed(11);
    const at::Tensor positions = at::arange(tokens, at::kLong).unsqueeze(0);
    const CachedKV prompt = cache->update(0, at::randn({1, kv_heads, tokens, head_dim}),
                                          at::randn({1, kv_heads, tokens, head_dim}), positions);
    ASSERT_EQ(prompt.positions.dim(), 2) << spec;
    EXPECT_TRUE(at::equal(prompt.positions, positions)) << spec;
    EXPECT_EQ(prompt.keys.size(2), tokens) << spec;
    cache->after_attention(0, at::randn({1, config.num_heads, tokens, head_dim}), positions);
    const at::Tensor next = at::full({1, 1}, tokens, at::kLong);
    const CachedKV step =
        cache->update(0, at::randn({1, kv_heads, 1, head_dim}), at::randn({1, kv_heads, 1, head_dim}), next);
    ASSERT_EQ(step.positions.dim(), 3) << spec;
    EXPECT_LT(step.keys.size(2), tokens) << spec << ": the budget evicted";
    EXPECT_EQ(step.positions.size(2), step.keys.size(2)) << spec;
  }
}

// Decode writes into buffers sized once after the prompt: budget + 1 slots for the layouts that evict every step (the
// step's token lands in the next slot, then takes the evicted token's), the kept prompt plus the tokens to come for
// those that only compress the prompt; no step reallocates (the buffer's address stays), and a held token's key is
// the one it was given.
TEST(SelectivePolicies, DecodeStepsWriteInPlaceIntoBuffersSizedOnce) {
  const ModelConfig& config = testing::tiny_base_model().config;
  const int64_t tokens = 48, new_tokens = 8, head_dim = config.head_dim, kv_heads = config.num_kv_heads;
  for (const char* spec : {"streaming:budget=0.25", "h2o:budget=0.25", "snapkv:budget=0.25"}) {
    std::unique_ptr<KVCache> cache = cache_for(spec, tokens, /*batch=*/1);
    auto& selective = dynamic_cast<SelectiveKVCache&>(*cache);
    const bool evicts_every_step = std::string(spec).rfind("snapkv", 0) != 0;
    at::manual_seed(12);
    const at::Tensor positions = at::arange(tokens, at::kLong).unsqueeze(0);
    cache->update(0, at::randn({1, kv_heads, tokens, head_dim}), at::randn({1, kv_heads, tokens, head_dim}), positions);
    cache->after_attention(0, at::randn({1, config.num_heads, tokens, head_dim}), positions);
    const int64_t kept = cache->length(0);
    EXPECT_LT(kept, tokens) << spec;
    EXPECT_EQ(selective.slot_capacity(0), evicts_every_step ? kept + 1 : kept + new_tokens) << spec;
    const void* buffer = selective.positions(0).data_ptr();
    for (int64_t t = 0; t < new_tokens; ++t) {
      const at::Tensor key = at::randn({1, kv_heads, 1, head_dim});
      const at::Tensor next = at::full({1, 1}, tokens + t, at::kLong);
      const CachedKV step = cache->update(0, key, at::randn({1, kv_heads, 1, head_dim}), next);
      cache->after_attention(0, at::randn({1, config.num_heads, 1, head_dim}), next);
      EXPECT_EQ(selective.positions(0).data_ptr(), buffer) << spec << " step " << t;
      EXPECT_EQ(cache->length(0), evicts_every_step ? kept : kept + t + 1) << spec << " step " << t;
      // The newest token is held (it is in the recent window) under its own key, wherever its slot is.
      const at::Tensor held = selective.positions(0)[0][0];
      const at::Tensor slot = (held == tokens + t).nonzero();
      ASSERT_EQ(slot.numel(), 1) << spec << " step " << t;
      EXPECT_TRUE(at::equal(step.keys[0][0][slot.item<int64_t>()], key[0][0][0])) << spec << " step " << t;
    }
  }
}

// H2O: the budget holds at every step; a token every query attends to (a heavy hitter) outlives older
// and newer tokens outside the recent window.
TEST(H2OPolicy, HeavyHitterSurvivesAndBudgetHolds) {
  at::manual_seed(6);
  const int64_t kv_heads = 1, head_dim = 8, budget = 6;
  SelectiveLayerOptions options;
  options.budget_tokens = budget;
  options.recent_tokens = 2;
  options.score = TokenScore::kAccumulatedAttention;
  SelectiveKVCache cache({options}, 1, kv_heads, head_dim, at::TensorOptions().dtype(at::kFloat));
  at::Tensor heavy_key = at::randn({head_dim});
  heavy_key = 4.0 * heavy_key / heavy_key.norm();
  for (int64_t t = 0; t < 30; ++t) {
    at::Tensor key = 0.1 * at::randn({1, kv_heads, 1, head_dim});
    if (t == 3) key[0][0][0] = heavy_key;
    at::Tensor position = at::full({1, 1}, t, at::kLong);
    cache.update(0, key, at::randn({1, kv_heads, 1, head_dim}), position);
    cache.after_attention(0, heavy_key.reshape({1, 1, 1, head_dim}), position);  // every query seeks token 3
    EXPECT_LE(cache.length(0), budget);
  }
  const std::set<int64_t> held = held_positions(cache, 0, 0, 0);
  EXPECT_EQ(held.size(), static_cast<size_t>(budget));
  EXPECT_TRUE(held.count(3)) << "the heavy hitter was evicted";
  EXPECT_TRUE(held.count(28) && held.count(29)) << "the recent window was evicted";
}

// TOVA: after the prompt and after every decode step the layer holds `budget` tokens, the same for each KV head, and the
// one that went is the one the step's newest query attended to least (averaged over every query head), never the newest.
TEST(TovaPolicy, EvictsWhatTheNewestQueryAttendsToLeastAveragedOverHeads) {
  at::manual_seed(17);
  const int64_t heads = 4, kv_heads = 2, head_dim = 8, budget = 5, prompt = 9;
  ModelConfig config = testing::tiny_base_model().config;
  config.num_layers = 1;
  const CachePlan plan = plan_cache(parse_policy("tova:budget=5"), config, prompt);
  ASSERT_EQ(plan.layers.size(), 1u);
  SelectiveKVCache cache(plan.layers, 1, kv_heads, head_dim, at::TensorOptions().dtype(at::kFloat));
  // The expected survivors: held positions minus the one with the lowest mean attention from the newest query.
  auto survivors = [&](const at::Tensor& q, const CachedKV& kv, int64_t newest_position) {
    const at::Tensor keys = kv.keys.repeat_interleave(heads / kv_heads, 1);  // [1, heads, slots, d]
    const at::Tensor newest_query = q.narrow(2, q.size(2) - 1, 1);
    const at::Tensor probs = at::softmax(at::matmul(newest_query, keys.transpose(-1, -2)) / std::sqrt(8.0), -1);
    const at::Tensor held = kv.positions.dim() == 2 ? kv.positions[0] : kv.positions[0][0];
    at::Tensor mean = probs.mean(1).reshape({-1});  // [slots]
    mean = mean.masked_fill(held == newest_position, std::numeric_limits<float>::infinity());
    std::set<int64_t> kept;
    const at::Tensor order = std::get<1>(mean.sort(/*stable=*/true, -1, /*descending=*/true));
    for (int64_t i = 0; i < budget; ++i) kept.insert(held[order[i]].item<int64_t>());
    return kept;
  };
  auto held_by = [&](int64_t head) {
    std::set<int64_t> held;
    const at::Tensor row = cache.positions(0)[0][head];
    for (int64_t i = 0; i < row.size(0); ++i)
      if (row[i].item<int64_t>() >= 0) held.insert(row[i].item<int64_t>());
    return held;
  };
  const at::Tensor q = at::randn({1, heads, prompt, head_dim});
  const at::Tensor k = at::randn({1, kv_heads, prompt, head_dim}), v = at::randn_like(k);
  const at::Tensor positions = at::arange(prompt, at::kLong).unsqueeze(0);
  // The prompt's own scores see only keys at or before each query; the newest (last) query sees them all.
  const CachedKV prompt_kv = cache.update(0, k, v, positions);
  const std::set<int64_t> expected_prompt = survivors(q, prompt_kv, prompt - 1);
  cache.after_attention(0, q, positions);
  EXPECT_EQ(held_by(0), expected_prompt);
  EXPECT_EQ(held_by(1), expected_prompt) << "one token set per layer";
  for (int64_t t = prompt; t < prompt + 12; ++t) {
    const at::Tensor step_q = at::randn({1, heads, 1, head_dim});
    const at::Tensor step_k = at::randn({1, kv_heads, 1, head_dim}), step_v = at::randn_like(step_k);
    const at::Tensor step_positions = at::full({1, 1}, t, at::kLong);
    const CachedKV kv = cache.update(0, step_k, step_v, step_positions);
    const std::set<int64_t> expected = survivors(step_q, kv, t);
    cache.after_attention(0, step_q, step_positions);
    EXPECT_EQ(held_by(0), expected) << "step " << t;
    EXPECT_EQ(held_by(1), expected) << "step " << t;
    EXPECT_TRUE(held_by(0).count(t)) << "the newest token stays";
    EXPECT_EQ(cache.length(0), budget);
  }
}

// SnapKV with decode=1 (decoding-time compression): the budget holds after every decode step, and the slot that goes
// is, per KV head, the one the newest `window` queries (the prompt's last, then the generated tokens') attended to
// least, pooled over neighbouring positions, outside the window's own tokens.
TEST(SnapKVPolicy, DecodeCompressionSlidesTheObservationWindowOverGeneratedTokens) {
  at::manual_seed(23);
  const int64_t heads = 4, kv_heads = 2, head_dim = 8, budget = 8, window = 3, kernel = 3, prompt = 12;
  ModelConfig config = testing::tiny_base_model().config;
  config.num_layers = 1;
  const CachePlan plan = plan_cache(parse_policy("snapkv:budget=8,window=3,kernel=3,decode=1"), config, prompt);
  SelectiveKVCache cache(plan.layers, 1, kv_heads, head_dim, at::TensorOptions().dtype(at::kFloat));
  std::vector<at::Tensor> seen_queries;  // [heads, head_dim] per position
  // Per KV head: the held positions after evicting the lowest pooled vote, computed directly.
  auto expected_after = [&](const CachedKV& kv, int64_t newest_position) {
    std::vector<std::set<int64_t>> kept(kv_heads);
    for (int64_t h = 0; h < kv_heads; ++h) {
      const at::Tensor held = kv.positions.dim() == 2 ? kv.positions[0] : kv.positions[0][h];
      const at::Tensor order = held.argsort(/*stable=*/false, /*dim=*/0);
      const at::Tensor keys = kv.keys[0][h].index_select(0, order);  // by position
      const at::Tensor key_positions = held.index_select(0, order);
      at::Tensor votes = at::zeros({key_positions.size(0)});
      for (int64_t p = newest_position - window + 1; p <= newest_position; ++p)
        for (int64_t g = 0; g < heads / kv_heads; ++g) {
          const at::Tensor query = seen_queries[p][h * (heads / kv_heads) + g];
          at::Tensor logits = at::matmul(keys, query) / std::sqrt(8.0);
          logits = logits.masked_fill(key_positions > p, -std::numeric_limits<float>::infinity());
          votes += at::softmax(logits, 0) / static_cast<double>(heads / kv_heads);
        }
      at::Tensor pooled = at::avg_pool1d(votes.view({1, 1, -1}), {kernel}, {1}, {kernel / 2}, false, false).view({-1});
      pooled = pooled.masked_fill(key_positions > newest_position - window, std::numeric_limits<float>::infinity());
      const int64_t lowest = pooled.argmin().item<int64_t>();
      for (int64_t i = 0; i < key_positions.size(0); ++i)
        if (i != lowest) kept[h].insert(key_positions[i].item<int64_t>());
    }
    return kept;
  };
  auto held_by = [&](int64_t head) {
    std::set<int64_t> held;
    const at::Tensor row = cache.positions(0)[0][head];
    for (int64_t i = 0; i < row.size(0); ++i) held.insert(row[i].item<int64_t>());
    return held;
  };
  const at::Tensor q = at::randn({1, heads, prompt, head_dim});
  for (int64_t p = 0; p < prompt; ++p) seen_queries.push_back(q[0].select(1, p));
  const at::Tensor k = at::randn({1, kv_heads, prompt, head_dim}), v = at::randn_like(k);
  cache.update(0, k, v, at::arange(prompt, at::kLong).unsqueeze(0));
  cache.after_attention(0, q, at::arange(prompt, at::kLong).unsqueeze(0));
  EXPECT_EQ(cache.length(0), budget);
  for (int64_t t = prompt; t < prompt + 10; ++t) {
    const at::Tensor step_q = at::randn({1, heads, 1, head_dim});
    seen_queries.push_back(step_q[0].select(1, 0));
    const at::Tensor step_k = at::randn({1, kv_heads, 1, head_dim}), step_v = at::randn_like(step_k);
    const at::Tensor position = at::full({1, 1}, t, at::kLong);
    const CachedKV kv = cache.update(0, step_k, step_v, position);
    const auto expected = expected_after(kv, t);
    cache.after_attention(0, step_q, position);
    EXPECT_EQ(cache.length(0), budget) << "step " << t;
    for (int64_t h = 0; h < kv_heads; ++h) EXPECT_EQ(held_by(h), expected[h]) << "step " << t << " head " << h;
  }
  // decode=0 (SnapKV's own rule) keeps every generated token.
  const CachePlan prompt_only = plan_cache(parse_policy("snapkv:budget=8,window=3,kernel=3"), config, prompt);
  EXPECT_FALSE(prompt_only.layers[0].evict_during_decode);
}

// Expected Attention, computed here in float64 from the position-free queries the test drew (not from the rotated ones
// the cache sees): per KV head the cache keeps the sinks and the keys with the highest expected attention × ‖v‖.
TEST(ExpectedAttentionPolicy, KeepsWhatTheFutureQueriesAreExpectedToAttendTo) {
  at::manual_seed(29);
  const int64_t heads = 4, kv_heads = 2, group = 2, dim = 8, prompt = 30, budget = 10, sink = 2, future = 16;
  ModelConfig config = testing::tiny_base_model().config;
  config.num_layers = 1;
  config.head_dim = dim;
  const CachePlan plan = plan_cache(parse_policy("expected:budget=10,sink=2,future=16"), config, prompt);
  const at::Tensor inv_freq = rope_inverse_frequencies(config.rope, dim);
  SelectiveKVCache cache(plan.layers, 1, kv_heads, dim, at::TensorOptions().dtype(at::kFloat), 0, inv_freq);
  const auto doubles = at::TensorOptions().dtype(at::kDouble);
  // Queries with a strong mean and spread, so both terms of the score matter.
  const at::Tensor plain_q = 3.0 * at::randn({1, heads, prompt, dim}, doubles) + at::randn({1, heads, 1, dim}, doubles);
  const at::Tensor plain_k = at::randn({1, kv_heads, prompt, dim}, doubles);
  const at::Tensor values = at::randn({1, kv_heads, prompt, dim}, doubles);
  const at::Tensor positions = at::arange(prompt, at::kLong).unsqueeze(0);
  const RopeAngles angles = rope_angles(inv_freq, positions, at::kDouble);
  const at::Tensor q = apply_rope(plain_q, angles), k = apply_rope(plain_k, angles);
  cache.update(0, k.to(at::kFloat), values.to(at::kFloat), positions);
  cache.after_attention(0, q.to(at::kFloat), positions);

  // R(t) as a matrix: pair (i, i + d/2) turned by t·inv_freq[i].
  auto rotation = [&](int64_t t) {
    at::Tensor r = at::zeros({dim, dim}, doubles);
    for (int64_t i = 0; i < dim / 2; ++i) {
      const double angle = static_cast<double>(t) * inv_freq[i].item<double>();
      r[i][i] = std::cos(angle), r[i][i + dim / 2] = -std::sin(angle);
      r[i + dim / 2][i] = std::sin(angle), r[i + dim / 2][i + dim / 2] = std::cos(angle);
    }
    return r;
  };
  at::Tensor mean_rotation = at::zeros({dim, dim}, doubles);
  for (int64_t t = prompt; t < prompt + future; ++t) mean_rotation += rotation(t) / static_cast<double>(future);
  for (int64_t kv = 0; kv < kv_heads; ++kv) {
    at::Tensor scores = at::zeros({prompt}, doubles);
    for (int64_t g = 0; g < group; ++g) {
      const at::Tensor counted = plain_q[0][kv * group + g].narrow(0, sink, prompt - sink);  // [tokens, d]
      const at::Tensor mu = counted.mean(0), centred = counted - mu;
      const at::Tensor sigma = at::matmul(centred.t(), centred) / static_cast<double>(prompt - sink);
      const at::Tensor mu_future = at::matmul(mean_rotation, mu);
      const at::Tensor sigma_future = at::matmul(mean_rotation, at::matmul(sigma, mean_rotation.t()));
      const at::Tensor keys = k[0][kv];  // [prompt, d]
      const at::Tensor logits = at::matmul(keys, mu_future) / std::sqrt(static_cast<double>(dim)) +
                                (at::matmul(keys, sigma_future) * keys).sum(1) / (2.0 * dim);
      scores += at::softmax(logits, 0) / static_cast<double>(group);
    }
    scores = scores * values[0][kv].norm(2, 1);
    scores.narrow(0, 0, sink).fill_(std::numeric_limits<double>::infinity());
    const at::Tensor top = std::get<1>(scores.topk(budget));
    std::set<int64_t> expected, held;
    for (int64_t i = 0; i < budget; ++i) expected.insert(top[i].item<int64_t>());
    const at::Tensor row = cache.positions(0)[0][kv];
    for (int64_t i = 0; i < row.size(0); ++i) held.insert(row[i].item<int64_t>());
    EXPECT_EQ(held, expected) << "KV head " << kv;
  }
  // The scores do not depend on how many keys go through at once.
  const at::Tensor key_positions = positions.unsqueeze(1).expand({1, kv_heads, prompt});
  const at::Tensor whole = expected_attention_scores(q.to(at::kFloat), positions, k.to(at::kFloat), values.to(at::kFloat),
                                                     key_positions, inv_freq, plan.layers[0].expected);
  const at::Tensor sliced = expected_attention_scores(q.to(at::kFloat), positions, k.to(at::kFloat),
                                                      values.to(at::kFloat), key_positions, inv_freq,
                                                      plan.layers[0].expected, /*slice_elements=*/1);
  EXPECT_TRUE(at::allclose(sliced, whole, 1e-6, 1e-7));
}

TEST(PyramidKVPolicy, BudgetsFallOverLayersAndAverageTheBudget) {
  ModelConfig config = testing::tiny_base_model().config;
  config.num_layers = 8;
  const CachePlan plan = plan_cache(parse_policy("pyramidkv:budget=0.25,window=8"), config, 400);
  ASSERT_EQ(plan.layers.size(), 8u);
  double total = 0;
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    total += plan.layers[i].budget_tokens;
    if (i > 0) EXPECT_LT(plan.layers[i].budget_tokens, plan.layers[i - 1].budget_tokens);
    EXPECT_GT(plan.layers[i].budget_tokens, 8);  // never below the observation window
  }
  EXPECT_NEAR(total / 8, 100, 1.0);
}

TEST(KiviQuantization, PackingRoundTripsAndErrorStaysWithinHalfAStep) {
  at::manual_seed(12);
  for (int64_t bits : {2, 4}) {
    at::Tensor keys = at::randn({2, 3, 32, 16}) * 3 + 1;
    QuantizedBlock block = quantize_keys_per_channel(keys, bits);
    EXPECT_EQ(block.codes.size(-1), 16 * bits / 8);
    EXPECT_EQ(block.scale.sizes(), at::IntArrayRef({2, 3, 1, 16}));
    at::Tensor restored = dequantize_keys_per_channel(block, bits, at::kFloat);
    at::Tensor step = block.scale.to(at::kFloat);
    EXPECT_TRUE(((restored - keys).abs() <= step / 2 + 1e-3 * keys.abs().max()).all().item<bool>()) << bits;

    at::Tensor values = at::randn({2, 3, 5, 16});
    QuantizedBlock value_block = quantize_values_per_token(values, bits, /*group_size=*/8);
    EXPECT_EQ(value_block.scale.sizes(), at::IntArrayRef({2, 3, 5, 2}));
    at::Tensor restored_values = dequantize_values_per_token(value_block, bits, 8, at::kFloat);
    at::Tensor value_step = value_block.scale.to(at::kFloat).repeat_interleave(8, -1);
    EXPECT_TRUE(((restored_values - values).abs() <= value_step / 2 + 1e-3).all().item<bool>()) << bits;
    // Fewer bits, coarser steps.
    if (bits == 2) EXPECT_GT((restored - keys).abs().mean().item<double>(), 0.1);
  }
}

TEST(KiviPolicy, RecentWindowStaysFullPrecisionAndBytesMatchTheLayout) {
  LoadedModel& loaded = testing::tiny_base_model();
  const ModelConfig& config = loaded.config;
  const Batch batch = random_batch(/*seed=*/13, /*longest=*/100);
  auto cache = cache_for("kivi:bits=2,group=32,residual=16", 100);
  cached_logits(loaded.model, *cache, batch.ids, batch.positions, batch.fed);
  auto& kivi = dynamic_cast<QuantizedKVCache&>(*cache);
  // 106 tokens: quantized in whole groups of 32 while at least 16 stay full precision → 64 + 42 recent.
  EXPECT_EQ(kivi.quantized_tokens(0), 64);
  EXPECT_EQ(cache->length(0), 106);
  const int64_t rows = 2 * config.num_kv_heads;                             // batch × kv heads
  const int64_t codes = 2 * rows * 64 * config.head_dim * 2 / 8;            // keys + values, 2 bits
  const int64_t key_scales = rows * 2 * config.head_dim * 2 * 2;            // 2 groups, scale + min, fp16
  const int64_t value_scales = rows * 64 * (config.head_dim / 32) * 2 * 2;  // per token and group
  const int64_t recent = 2 * rows * 42 * config.head_dim * 4;               // fp32 keys + values
  EXPECT_EQ(cache->bytes(), config.num_layers * (codes + key_scales + value_scales + recent));
  auto full = make_full_cache(loaded.model, 2, 106);
  EXPECT_LT(cache->bytes() * 2, full->bytes() * 1);  // well under half of full at this length
}

TEST(PolicySpecs, ParseWithDefaultsAndRejectBadInputClearly) {
  const PolicySpec spec = parse_policy("snapkv:budget=0.25,window=8");
  EXPECT_EQ(spec.name, "snapkv");
  EXPECT_EQ(spec.parameters.at("budget"), 0.25);
  EXPECT_EQ(spec.parameters.at("window"), 8);
  EXPECT_EQ(spec.parameters.at("kernel"), 5);
  EXPECT_EQ(budget_tokens(spec, 101), 26);
  EXPECT_EQ(budget_tokens(parse_policy("snapkv:budget=64"), 1000), 64);
  EXPECT_INPUT_ERROR(parse_policy("snapkb:budget=0.2"), "--policy", "unknown policy 'snapkb'", "snapkv", "kivi");
  EXPECT_INPUT_ERROR(parse_policy("snapkv:budgte=0.2"), "budgte", "budget, window, kernel");
  EXPECT_INPUT_ERROR(parse_policy("kivi:bits=8"), "bits", "[2");
  EXPECT_INPUT_ERROR(parse_policy("kivi:bits=3"), "bits: expected 2 or 4");
  EXPECT_INPUT_ERROR(parse_policy("snapkv:kernel=4"), "odd");
  EXPECT_INPUT_ERROR(parse_policy("streaming:budget=abc"), "expected a number", "abc");
  EXPECT_INPUT_ERROR(parse_policy("streaming:budget=12.5"), "whole");
  EXPECT_INPUT_ERROR(plan_cache(parse_policy("kivi:group=12"), testing::tiny_base_model().config, 100), "group",
                     "divisor of head_dim 32");
}

}  // namespace
}  // namespace kvforge
