#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <map>

#include "runtime/banded_attention.h"
#include "runtime/generate.h"
#include "runtime/model_loader.h"
#include "tests/test_util.h"

namespace kvforge {
namespace {

using testing::fixture;

TEST(AttentionMask, CausalPaddingAndSlidingWindow) {
  // One sequence with two left-padding slots, then positions 0..3.
  at::Tensor positions = at::tensor({-1, -1, 0, 1, 2, 3}, at::kLong).unsqueeze(0);
  at::Tensor mask = attention_mask(positions, positions, /*sliding_window=*/2).squeeze(0).squeeze(0);
  for (int64_t q = 0; q < 6; ++q) {
    const int64_t query_position = q - 2;
    for (int64_t k = 0; k < 6; ++k) {
      const int64_t key_position = k - 2;
      bool expected = query_position < 0
                          ? true  // padding rows see everything (outputs unused)
                          : key_position >= 0 && key_position <= query_position && query_position - key_position < 2;
      EXPECT_EQ(mask[q][k].item<bool>(), expected) << "query " << q << " key " << k;
    }
  }
}

// Banded prefill equals masked attention under the streaming rule on every real query: a first chunk (sinks inside
// it, left padding in one sequence, right padding in another) and a later chunk after held slots in rotated ring
// order, GQA, a block size that does not divide the chunk.
TEST(BandedAttention, EqualsMaskedAttentionUnderTheStreamingRule) {
  at::manual_seed(12);
  const auto doubles = at::TensorOptions().dtype(at::kDouble);
  const int64_t batch = 3, heads = 6, kv_heads = 2, dim = 16, sink = 4, window = 24, block = 16, tokens = 150;
  for (const int64_t prior : {0, 28}) {
    at::Tensor positions = (at::arange(tokens, at::kLong) + (prior > 0 ? 300 : 0)).unsqueeze(0).repeat({batch, 1});
    positions[1].narrow(0, 0, 9).fill_(-1);  // left padding
    positions[1].narrow(0, 9, tokens - 9).copy_(at::arange(tokens - 9) + (prior > 0 ? 300 : 0));
    positions[2].narrow(0, tokens - 5, 5).fill_(-1);         // right padding
    at::Tensor held = at::empty({batch, prior}, at::kLong);  // a ring's sinks and newest tokens, rotated
    if (prior > 0) {
      const at::Tensor ring = at::cat({at::arange(sink, at::kLong), at::arange(300 - (prior - sink), 300, at::kLong)});
      held = at::roll(ring, 5).unsqueeze(0).repeat({batch, 1});
      held[0][3] = -1;  // an empty slot
    }
    const at::Tensor key_positions = at::cat({held, positions}, 1);
    const at::Tensor q = at::randn({batch, heads, tokens, dim}, doubles);
    const at::Tensor k = at::randn({batch, kv_heads, prior + tokens, dim}, doubles), v = at::randn_like(k);
    const at::Tensor expected = grouped_attention(q, k, v, attention_mask(positions, key_positions, 0, sink, window));
    const at::Tensor got = banded_attention(q, k, v, positions, key_positions, sink, window, block);
    const at::Tensor real = (positions >= 0).unsqueeze(1).unsqueeze(3).expand_as(got);
    // grouped_attention's softmax runs in fp32.
    EXPECT_LT((got - expected).masked_select(real).abs().max().item<double>(), 1e-6) << "prior " << prior;
    // One block per slice (what a long batch of prompts gets): the same outputs.
    const at::Tensor sliced = banded_attention(q, k, v, positions, key_positions, sink, window, block,
                                               /*slice_elements=*/1);
    EXPECT_LT((sliced - got).masked_select(real).abs().max().item<double>(), 1e-12) << "prior " << prior;
    // The window matters here: full causal attention differs.
    const at::Tensor causal = grouped_attention(q, k, v, attention_mask(positions, key_positions, 0));
    EXPECT_GT((causal - expected).masked_select(real).abs().max().item<double>(), 1e-2) << "prior " << prior;
  }
}

TEST(Generate, CachedDecodeEqualsFullRecompute) {
  // Logits of each token fed one at a time through the cache equal one full forward pass.
  LoadedModel loaded = load_model(fixture("mistral"), at::kCPU, at::kFloat);  // sliding window 8 < 20 tokens
  torch::NoGradGuard no_grad;
  at::manual_seed(3);
  at::Tensor ids = at::randint(3, loaded.config.vocab_size, {2, 20}, at::kLong);
  at::Tensor positions = at::arange(20, at::kLong).unsqueeze(0).repeat({2, 1});
  at::Tensor full = loaded.model->forward(ids, positions);
  auto cache = make_full_cache(loaded.model, 2, 4);  // small on purpose: forces the buffers to grow
  at::Tensor prefix = loaded.model->forward(ids.narrow(1, 0, 7), positions.narrow(1, 0, 7), cache.get());
  EXPECT_LE((prefix - full.narrow(1, 0, 7)).abs().max().item<double>(), 1e-5);
  for (int64_t t = 7; t < 20; ++t) {
    at::Tensor step = loaded.model->forward(ids.narrow(1, t, 1), positions.narrow(1, t, 1), cache.get());
    EXPECT_LE((step.squeeze(1) - full.select(1, t)).abs().max().item<double>(), 1e-5) << "token " << t;
  }
  EXPECT_EQ(cache->length(0), 20);
  // bytes() counts the buffers really held: keys + values, fp32, grown to at least 20 slots.
  auto& full_cache = dynamic_cast<FullKVCache&>(*cache);
  const int64_t per_slot = 2 * loaded.config.num_kv_heads * loaded.config.head_dim * 4 * 2;
  EXPECT_EQ(cache->bytes(), loaded.config.num_layers * full_cache.capacity(0) * per_slot);
  EXPECT_GE(full_cache.capacity(0), 20);
}

TEST(Generate, StopsOnEosAndStopStrings) {
  LoadedModel loaded = load_model(fixture("llama"), at::kCPU, at::kFloat);
  const std::vector<int64_t> prompt = {5, 17, 300, 42};
  GenerationOptions options;
  options.max_new_tokens = 12;
  const std::vector<int64_t> free_run = generate(loaded.model, {prompt}, options).sequences[0].tokens;
  ASSERT_EQ(free_run.size(), 12u);
  options.eos_token_ids = {free_run[3]};
  GeneratedSequence stopped = generate(loaded.model, {prompt}, options).sequences[0];
  const size_t first = std::find(free_run.begin(), free_run.end(), free_run[3]) - free_run.begin();
  EXPECT_EQ(stopped.finish, FinishReason::kEos);
  EXPECT_EQ(stopped.tokens, std::vector<int64_t>(free_run.begin(), free_run.begin() + first + 1));

  options.eos_token_ids.clear();
  const Tokenizer& tokenizer = *loaded.tokenizer;
  const std::string text = tokenizer.decode({free_run[4], free_run[5]});
  options.stop_strings = {text};
  GeneratedSequence by_string = generate(loaded.model, {prompt}, options, &tokenizer).sequences[0];
  EXPECT_EQ(by_string.finish, FinishReason::kStopString);
  EXPECT_LE(by_string.tokens.size(), 6u);
  EXPECT_NE(tokenizer.decode(by_string.tokens).find(text), std::string::npos);
}

TEST(Sampler, GreedyTopKAndSeeds) {
  at::manual_seed(11);
  at::Tensor logits = at::randn({50});
  const int64_t argmax = logits.argmax().item<int64_t>();
  EXPECT_EQ(Sampler({}).next(logits), argmax);
  EXPECT_EQ(Sampler({/*temperature=*/1.0, /*top_k=*/1, 1.0, 9}).next(logits), argmax);
  EXPECT_EQ(Sampler({1.0, 0, /*top_p=*/1e-6, 9}).next(logits), argmax);

  Sampler a({1.0, 0, 1.0, 123}), b({1.0, 0, 1.0, 123}), c({1.0, 0, 1.0, 124});
  std::vector<int64_t> draws_a, draws_b, draws_c;
  for (int i = 0; i < 50; ++i) {
    draws_a.push_back(a.next(logits));
    draws_b.push_back(b.next(logits));
    draws_c.push_back(c.next(logits));
  }
  EXPECT_EQ(draws_a, draws_b);
  EXPECT_NE(draws_a, draws_c);

  // top_k = 3: only the three largest logits are ever drawn.
  at::Tensor top3 = std::get<1>(logits.topk(3));
  Sampler k3({1.0, 3, 1.0, 5});
  for (int i = 0; i < 200; ++i) EXPECT_TRUE((top3 == k3.next(logits)).any().item<bool>());
}

TEST(Sampler, FrequenciesFollowTheSoftmax) {
  at::Tensor logits = at::tensor({2.0f, 1.0f, 0.0f, -1.0f});
  at::Tensor probs = at::softmax(logits / 0.7, 0);
  Sampler sampler({0.7, 0, 1.0, 77});
  const int draws = 20000;
  std::map<int64_t, int> counts;
  for (int i = 0; i < draws; ++i) ++counts[sampler.next(logits)];
  for (int64_t id = 0; id < 4; ++id) {
    const double expected = probs[id].item<double>();
    const double sigma = std::sqrt(expected * (1 - expected) / draws);
    EXPECT_NEAR(counts[id] / double(draws), expected, 5 * sigma) << "token " << id;
  }
}

TEST(Sampler, RejectsBadOptions) {
  EXPECT_THROW(Sampler({-1.0, 0, 1.0, 0}), std::invalid_argument);
  EXPECT_THROW(Sampler({1.0, -2, 1.0, 0}), std::invalid_argument);
  EXPECT_THROW(Sampler({1.0, 0, 0.0, 0}), std::invalid_argument);
}

}  // namespace
}  // namespace kvforge

namespace kvforge {
namespace {

TEST(CausalPrefix, FusedGpuAttentionMatchesTheMaskedPath) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (CI has none; run on the GPU machine)";
  LoadedModel loaded = load_model(testing::fixture("qwen2"), at::Device(at::kCUDA, 0), at::kFloat);
  torch::NoGradGuard no_grad;
  at::manual_seed(9);
  // Right padding on row 1: its last 5 positions are -1 and their outputs are ignored.
  at::Tensor ids = at::randint(3, loaded.config.vocab_size, {2, 40}, at::kLong);
  at::Tensor positions = at::arange(40, at::kLong).unsqueeze(0).repeat({2, 1});
  positions[1].narrow(0, 35, 5).fill_(-1);
  const at::Device cuda(at::kCUDA, 0);
  at::Tensor masked = loaded.model->forward(ids.to(cuda), positions.to(cuda)).cpu();
  at::Tensor fused =
      loaded.model->forward(ids.to(cuda), positions.to(cuda), nullptr, false, /*causal_prefix=*/true).cpu();
  EXPECT_LE((fused[0] - masked[0]).abs().max().item<double>(), 1e-3);
  EXPECT_LE((fused[1].narrow(0, 0, 35) - masked[1].narrow(0, 0, 35)).abs().max().item<double>(), 1e-3);
}

}  // namespace
}  // namespace kvforge
