// RLKV and DuoAttention: gates mix full and streaming attention exactly as defined (value and gradient), the
// penalty switches on above τ, binarising counts KV heads, the deployed head cache equals the mixed attention
// with binary gates while holding at most sink + recent slots per streaming head, and the TSV round-trips.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <random>

#include "policies/heads.h"
#include "policies/policy.h"
#include "runtime/generate.h"
#include "runtime/mixed_head_kv_cache.h"
#include "runtime/model_loader.h"
#include "tests/test_util.h"
#include "trainers/rlkv/distill.h"
#include "trainers/rlkv/grpo.h"

namespace kvforge {
namespace {

TEST(RlkvPenalty, SwitchesOnAboveTauAndScalesWithTheReward) {
  EXPECT_EQ(rlkv::penalty_scale(0.5, 1e-3, 0.5), 0.0);  // strict: r̄ = τ gives nothing
  EXPECT_EQ(rlkv::penalty_scale(0.2, 1e-3, 0.5), 0.0);
  EXPECT_DOUBLE_EQ(rlkv::penalty_scale(1.0, 1e-3, 0.5), 1e-3 * (std::exp(1.0) - 1));
  EXPECT_DOUBLE_EQ(rlkv::penalty_scale(0.75, 2.5e-3, 0.55), 2.5e-3 * (std::exp(0.75) - 1));
}

TEST(RlkvAdvantages, NormalisedPerGroupOrOverTheBatch) {
  const std::vector<double> rewards{1, 0, 0, 0, 1, 1, 1, 1};
  const std::vector<double> group = rlkv::grpo_advantages(rewards, 4, false);
  const double spread = std::sqrt(0.25 * 0.75);
  EXPECT_NEAR(group[0], 0.75 / spread, 1e-12);
  EXPECT_NEAR(group[1], -0.25 / spread, 1e-12);
  for (int i = 4; i < 8; ++i) EXPECT_EQ(group[i], 0.0);  // all right: no signal
  const std::vector<double> batch = rlkv::grpo_advantages(rewards, 4, true);
  EXPECT_NEAR(batch[4], (1 - 0.625) / std::sqrt(0.625 * 0.375), 1e-12);
}

TEST(RlkvProblems, JsonlRewardsTheExtractedAnswer) {
  const std::string dir = testing::make_temp_dir("problems");
  testing::write_file(dir + "/p.jsonl",
                      "{\"prompt\": \"2+2?\", \"answer\": \"4\"}\n{\"prompt\": \"3+3?\", \"answer\": 6}\n");
  const rlkv::ProblemSource source = rlkv::jsonl_problems(dir + "/p.jsonl", "Answer:\\s*(-?[0-9]+)", 1);
  for (const rlkv::Problem& problem : source(0, 0, 8)) {
    const std::string right = problem.prompt == "2+2?" ? "4" : "6";
    EXPECT_EQ(problem.reward("so Answer: 5\nno, Answer: " + right), 1.0);  // the last match counts
    EXPECT_EQ(problem.reward("Answer: " + right + "\nAnswer: 5"), 0.0);
    EXPECT_EQ(problem.reward("no answer"), 0.0);
  }
  EXPECT_INPUT_ERROR(rlkv::jsonl_problems(dir + "/p.jsonl", "Answer:(", 1), "data.answer_pattern");
  testing::write_file(dir + "/bad.jsonl", "{\"prompt\": \"x\"}\n");
  EXPECT_INPUT_ERROR(rlkv::jsonl_problems(dir + "/bad.jsonl", "(.*)", 1), "bad.jsonl", "line 1", "answer");
}

TEST(HeadSparsity, CountsKvHeadsAndPicksTheLowestGates) {
  at::manual_seed(3);
  const at::Tensor gates = at::rand({28, 4}, at::kFloat) * 1.2 - 0.1;  // 112 gates, some outside [0, 1]
  const auto streaming = streaming_heads_by_gate(gates, 0.25);
  int64_t count = 0;
  double highest_streaming = -1, lowest_full = 2;
  for (int64_t l = 0; l < 28; ++l)
    for (int64_t h = 0; h < 4; ++h) {
      const double value = std::clamp(gates[l][h].item<double>(), 0.0, 1.0);
      if (streaming[l][h])
        ++count, highest_streaming = std::max(highest_streaming, value);
      else
        lowest_full = std::min(lowest_full, value);
    }
  EXPECT_EQ(count, 28);
  EXPECT_LE(highest_streaming, lowest_full);
  EXPECT_EQ(streaming_heads_by_gate(gates, 0.0)[0], std::vector<bool>(4, false));
}

TEST(HeadMixing, GateGradientIsFullMinusStreamingOnItsQueryGroup) {
  at::manual_seed(5);
  HeadMixing mixing;
  at::Tensor gates = at::rand({1, 3}, at::kDouble).set_requires_grad(true);  // 3 KV heads, 6 query heads
  mixing.gates = gates.unbind(0);
  const at::Tensor full = at::randn({2, 6, 5, 4}, at::kDouble), streaming = at::randn({2, 6, 5, 4}, at::kDouble);
  const at::Tensor weights = at::randn({2, 6, 5, 4}, at::kDouble);
  at::Tensor out = mixing.mix(0, full, streaming);
  const at::Tensor alpha = gates.detach()[0].repeat_interleave(2).view({1, 6, 1, 1});
  EXPECT_TRUE(at::allclose(out, alpha * full + (1 - alpha) * streaming));
  const at::Tensor grad = torch::autograd::grad({(out * weights).sum()}, {gates})[0][0];
  const at::Tensor difference = ((full - streaming) * weights).sum({0, 2, 3});  // per query head
  for (int64_t h = 0; h < 3; ++h)
    EXPECT_NEAR(grad[h].item<double>(), (difference[2 * h] + difference[2 * h + 1]).item<double>(), 1e-12);
  // Weights on KV head 1's query heads only: the other gates get no gradient.
  at::Tensor only_one = at::zeros_like(weights);
  only_one.narrow(1, 2, 2).copy_(weights.narrow(1, 2, 2));
  const at::Tensor masked = torch::autograd::grad({(mixing.mix(0, full, streaming) * only_one).sum()}, {gates})[0][0];
  EXPECT_EQ(masked[0].item<double>(), 0.0);
  EXPECT_EQ(masked[2].item<double>(), 0.0);
  EXPECT_NE(masked[1].item<double>(), 0.0);
}

TEST(HeadMixing, AllGatesOpenGiveTheBaseModelsGreedyTokens) {
  LoadedModel& loaded = testing::tiny_base_model();
  const std::vector<int64_t> prompt = loaded.tokenizer->encode(
      "Compute (3 + 4) * 2. Think step by step, then give the final line as 'Answer: <number>'.\n");
  GenerationOptions options;
  options.max_new_tokens = 24;
  const auto base = generate(loaded.model, {prompt}, options).sequences[0].tokens;
  rlkv::HeadGates gates(loaded.config, /*sink=*/2, /*recent=*/4, at::kCPU);
  loaded.model->set_head_mixing(&gates.mixing);
  const auto mixed = generate(loaded.model, {prompt}, options).sequences[0].tokens;
  {
    torch::NoGradGuard no_grad;
    gates.values.fill_(0);  // all streaming with a 6-token window: a different model
  }
  gates.refresh();
  const auto closed = generate(loaded.model, {prompt}, options).sequences[0].tokens;
  loaded.model->set_head_mixing(nullptr);
  EXPECT_EQ(mixed, base);
  EXPECT_NE(closed, base);
}

// The deployed cache (streaming heads hold a ring of sink + recent slots) gives the logits of the mixed attention with
// binary gates over a full cache, at prefill (long enough for the streaming heads' banded path) and every decode
// step, a sequence that finished early (stepping at position -1) included.
TEST(MixedHeadCache, EqualsBinaryGatesAndHoldsAtMostSinkPlusRecent) {
  LoadedModel& loaded = testing::tiny_base_model();
  const ModelConfig& config = loaded.config;
  const std::vector<std::vector<bool>> streaming{{true, false}, {false, false}, {true, true}};
  const int64_t sink = 3, recent = 7, prompt = 200, steps = 12;
  at::manual_seed(41);
  const at::Tensor ids = at::randint(0, 256, {2, prompt}, at::kLong), fed = at::randint(0, 256, {2, steps}, at::kLong);
  at::Tensor positions = at::arange(prompt).unsqueeze(0).repeat({2, 1});
  positions[1].narrow(0, 0, 6).fill_(-1);  // left padding
  positions[1].narrow(0, 6, prompt - 6).copy_(at::arange(prompt - 6));
  at::Tensor fed_positions = (std::get<0>(positions.max(1, true)) + 1 + at::arange(steps).unsqueeze(0)).contiguous();
  fed_positions[1].narrow(0, 8, steps - 8).fill_(-1);  // sequence 1 finished: it steps at position -1
  auto run = [&](KVCache& cache, const std::function<void()>& after_step) {
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> outputs{loaded.model->forward(ids, positions, &cache, true)};
    after_step();
    for (int64_t t = 0; t < steps; ++t) {
      outputs.push_back(loaded.model->forward(fed.narrow(1, t, 1), fed_positions.narrow(1, t, 1), &cache, true));
      after_step();
    }
    return at::cat(outputs, 1);
  };
  rlkv::HeadGates gates(config, sink, recent, at::kCPU);
  {
    torch::NoGradGuard no_grad;
    for (int64_t l = 0; l < 3; ++l)
      for (int64_t h = 0; h < 2; ++h) gates.values[l][h] = streaming[l][h] ? 0.0 : 1.0;
  }
  gates.refresh();
  loaded.model->set_head_mixing(&gates.mixing);
  auto full = make_full_cache(loaded.model, 2, prompt + steps);
  const at::Tensor expected = run(*full, [] {});
  loaded.model->set_head_mixing(nullptr);

  MixedHeadKVCache cache(streaming, sink, recent, 2, config.head_dim, prompt + steps, at::kFloat);
  const at::Tensor got = run(cache, [&] {
    for (int64_t l = 0; l < 3; ++l) EXPECT_LE(cache.streaming_slots(l), sink + recent) << "layer " << l;
  });
  // Each step's last token (the prompt's, then each fed one) where it has a position: a padding token's output is
  // throwaway and differs by path.
  const at::Tensor real = at::cat({positions.narrow(1, prompt - 1, 1), fed_positions}, 1) >= 0;
  const at::Tensor error = ((got - expected).abs().amax(-1) * real).amax(0);  // per step
  EXPECT_LT(error.max().item<double>(), 1e-4) << "error per step (prefill, then each fed token): " << error;
  EXPECT_EQ(cache.length(1), prompt + steps);  // layer 1 is all full heads: every token
  EXPECT_LT(cache.bytes(), full->bytes());
}

TEST(HeadPolicies, RandomAndPerLayerSplitsAndArtifactsPlanMixedHeads) {
  const ModelConfig& config = testing::tiny_base_model().config;
  const CachePlan random = plan_cache(parse_policy("heads:sparsity=0.5,seed=3"), config, 100);
  ASSERT_EQ(random.layout, CacheLayout::kMixedHeads);
  int64_t total = 0;
  for (const auto& layer : random.heads.streaming) total += std::count(layer.begin(), layer.end(), true);
  EXPECT_EQ(total, 3);
  const CachePlan split = plan_cache(parse_policy("heads:sparsity=0.5,per_layer=1,recent=32"), config, 100);
  for (const auto& layer : split.heads.streaming) EXPECT_EQ(std::count(layer.begin(), layer.end(), true), 1);
  EXPECT_EQ(split.heads.recent_tokens, 32);

  Artifact artifact;
  artifact.method = kRlkvMethod;
  artifact.model = ModelFingerprint::of(config);
  artifact.tensors["gates"] = at::tensor({0.9, 0.1, 0.8, 0.7, 0.05, 1.0}, at::kFloat).view({3, 2});
  artifact.metrics = {{"deploy_sink", 8}, {"deploy_recent", 24}};
  auto shared = std::make_shared<const Artifact>(artifact);
  const std::vector<PolicySpec> specs = policies_from_artifact(shared);
  ASSERT_EQ(specs.size(), 3u);
  EXPECT_EQ(specs[1].label, "rlkv:sparsity=0.5");
  const CachePlan plan = plan_cache(specs[1], config, 100);
  EXPECT_EQ(plan.heads.sink_tokens, 8);  // the artifact's deployment window
  EXPECT_EQ(plan.heads.recent_tokens, 24);
  // The three lowest of 0.9 0.1 / 0.8 0.7 / 0.05 1.0 stream.
  EXPECT_EQ(plan.heads.streaming, (std::vector<std::vector<bool>>{{false, true}, {false, true}, {true, false}}));
  EXPECT_EQ(plan_cache(policies_from_artifact(shared, "sparsity=0.5,recent=40")[0], config, 100).heads.recent_tokens,
            40);
  EXPECT_INPUT_ERROR(parse_policy("rlkv:sparsity=0.5"), "--artifact");
  Artifact misshapen = artifact;
  misshapen.tensors["gates"] = at::ones({2, 2});
  EXPECT_INPUT_ERROR(policies_from_artifact(std::make_shared<const Artifact>(misshapen)), "gates", "[3, 2]");
}

// One GRPO micro-batch on the tiny model: rollouts are scored, the loss is finite and, where rewards differ
// within a group, the gates get a gradient; the distillation loss is zero with open gates and grows as they close.
TEST(RlkvObjectives, GrpoAndDistillProduceGateGradients) {
  LoadedModel& loaded = testing::tiny_base_model();
  rlkv::HeadGates gates(loaded.config, 2, 4, at::kCPU);  // a window shorter than prompt + completion
  // Reward: the completion's character codes sum to an even number (a coin the sampler flips).
  rlkv::ProblemSource source = [](int64_t, int64_t, int64_t count) {
    std::vector<rlkv::Problem> problems;
    for (int64_t i = 0; i < count; ++i)
      problems.push_back({"qz xv kj wp", [](const std::string& text) {
                            int sum = 0;
                            for (char c : text) sum += static_cast<unsigned char>(c);
                            return sum % 2 == 0 ? 1.0 : 0.0;
                          }});
    return problems;
  };
  rlkv::GrpoConfig config;
  config.prompts = 2;
  config.group_size = 4;
  config.max_new_tokens = 6;
  config.seed = 11;
  rlkv::GrpoObjective grpo(loaded.model, *loaded.tokenizer, loaded.eos_token_ids, gates, source, config);
  MicroBatchLoss loss = grpo.micro_batch_loss(0, 0);
  ASSERT_TRUE(std::isfinite(loss.loss.item<double>()));
  loss.loss.backward();
  const double reward = loss.metrics.at("reward");
  ASSERT_GT(reward, 0.0);
  ASSERT_LT(reward, 1.0);
  EXPECT_GT(gates.values.grad().abs().sum().item<double>(), 0.0);
  loaded.model->set_head_mixing(nullptr);

  rlkv::DistillConfig distill_config;
  distill_config.data.tasks = {"passkey"};
  distill_config.data.min_tokens = distill_config.data.max_tokens = 300;
  distill_config.data.loss_on_prompt = false;
  distill_config.batch_size = 2;
  distill_config.l1 = 0.0;
  rlkv::HeadGates open(loaded.config, 4, 16, at::kCPU);
  rlkv::DistillObjective distill(loaded.model, *loaded.tokenizer, loaded.eos_token_ids[0], open, distill_config);
  EXPECT_NEAR(distill.micro_batch_loss(0, 0).loss.item<double>(), 0.0, 1e-10);  // α = 1: the teacher itself
  {
    torch::NoGradGuard no_grad;
    open.values.fill_(0.5);
  }
  MicroBatchLoss half = distill.micro_batch_loss(0, 0);
  EXPECT_GT(half.loss.item<double>(), 1e-6);
  half.loss.backward();
  EXPECT_GT(open.values.grad().abs().sum().item<double>(), 0.0);
  loaded.model->set_head_mixing(nullptr);
}

}  // namespace
}  // namespace kvforge
