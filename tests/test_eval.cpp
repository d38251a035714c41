// The eval harness: perplexity through caches against a plain forward pass, and cells that measure what
// the caches really held on identical samples.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "eval/harness.h"
#include "eval/tasks/tokenized_samples.h"
#include "tests/test_util.h"

namespace kvforge::eval {
namespace {

double forward_nll(Transformer& model, const std::vector<int64_t>& tokens) {
  torch::NoGradGuard no_grad;
  const int64_t count = static_cast<int64_t>(tokens.size());
  at::Tensor ids = at::tensor(tokens, at::kLong).unsqueeze(0);
  at::Tensor logits = model->forward(ids, at::arange(count, at::kLong).unsqueeze(0));
  return at::cross_entropy_loss(logits[0].narrow(0, 0, count - 1), ids[0].narrow(0, 1, count - 1), {},
                                at::Reduction::Sum)
      .item<double>();
}

TEST(Perplexity, FullCacheInChunksEqualsOneForwardPass) {
  LoadedModel& loaded = testing::tiny_base_model();
  at::manual_seed(17);
  at::Tensor random = at::randint(0, 256, {150}, at::kLong);
  const std::vector<int64_t> tokens(random.data_ptr<int64_t>(), random.data_ptr<int64_t>() + 150);
  const double expected = forward_nll(loaded.model, tokens);
  const DocumentNll whole = document_nll(loaded.model, tokens, nullptr, /*chunk=*/150);
  EXPECT_EQ(whole.predicted, 149);
  EXPECT_NEAR(whole.total_nll, expected, 1e-9 * expected);
  for (int64_t chunk : {1, 16, 37}) {
    const DocumentNll chunked = document_nll(loaded.model, tokens, nullptr, chunk);
    EXPECT_EQ(chunked.predicted, 149);
    EXPECT_NEAR(chunked.total_nll, expected, 1e-5 * expected) << "chunk " << chunk;
  }
  // A streaming window covering the document is the full cache; a short one changes the predictions.
  const PolicySpec wide = parse_policy("streaming:window=200");
  EXPECT_NEAR(document_nll(loaded.model, tokens, &wide, 16).total_nll, expected, 1e-5 * expected);
  const PolicySpec narrow = parse_policy("streaming:sink=2,window=8");
  const DocumentNll streamed = document_nll(loaded.model, tokens, &narrow, 16);
  EXPECT_GT(std::abs(streamed.total_nll - expected), 1e-3 * expected);
  EXPECT_LT(streamed.peak_cache_bytes * 4, whole.peak_cache_bytes);
}

// The answer perplexity under the full cache is the plain forward pass's over prompt + answer, counted on the
// answer's tokens only; compressing the prompt hard makes the answer less likely.
TEST(AnswerPerplexity, FullCacheEqualsAForwardPassOverPromptAndAnswer) {
  LoadedModel& loaded = testing::tiny_base_model();
  const EncodedSamples samples =
      encode_samples(*loaded.tokenizer,
                     tasks::draw_samples(*loaded.tokenizer, "passkey", 256, /*count=*/1, /*seed=*/5, /*arithmetic_steps=*/2));
  const std::vector<int64_t>& prompt = samples.prompts[0];
  const std::vector<int64_t>& answer = samples.targets[0];
  std::vector<int64_t> joined = prompt;
  joined.insert(joined.end(), answer.begin(), answer.end());
  std::vector<int64_t> prompt_only(prompt.begin(), prompt.end());
  // NLL of the answer tokens = NLL(prompt + answer) − NLL(prompt), both from one forward pass each.
  const double expected = forward_nll(loaded.model, joined) - forward_nll(loaded.model, prompt_only);
  const CellResult full = evaluate_cell(loaded.model, *loaded.tokenizer, loaded.eos_token_ids, samples, nullptr, 1,
                                        /*answer_perplexity=*/true);
  EXPECT_EQ(full.answer_tokens, static_cast<int64_t>(answer.size()));
  EXPECT_NEAR(std::log(full.answer_perplexity) * static_cast<double>(answer.size()), expected, 1e-4);
  const PolicySpec streaming = parse_policy("streaming:sink=2,window=8");
  const CellResult squeezed = evaluate_cell(loaded.model, *loaded.tokenizer, loaded.eos_token_ids, samples, &streaming,
                                            1, /*answer_perplexity=*/true);
  EXPECT_GT(squeezed.answer_perplexity, 2 * full.answer_perplexity);
  EXPECT_EQ(evaluate_cell(loaded.model, *loaded.tokenizer, loaded.eos_token_ids, samples, nullptr, 1).answer_perplexity,
            -1);  // not measured unless asked
}

TEST(Harness, CellsShareSamplesAndMeasureHeldBytes) {
  LoadedModel& loaded = testing::tiny_base_model();
  const EncodedSamples samples =
      encode_samples(*loaded.tokenizer,
                     tasks::draw_samples(*loaded.tokenizer, "passkey", 256, /*count=*/4, /*seed=*/42, /*arithmetic_steps=*/2));
  const CellResult full = evaluate_cell(loaded.model, *loaded.tokenizer, loaded.eos_token_ids, samples, nullptr, 2);
  EXPECT_EQ(full.samples, 4);
  EXPECT_GE(full.accuracy, 0.75);  // the committed model finds pass keys at 256 tokens
  EXPECT_GT(full.ttft_ms, 0);
  EXPECT_GT(full.decode_tokens_per_s, 0);
  EXPECT_EQ(full.peak_device_bytes, -1);  // CPU
  int64_t depth_samples = 0;
  for (const DepthAccuracy& depth : full.by_depth) depth_samples += depth.samples;
  EXPECT_EQ(depth_samples, 4);
  // A 10% streaming budget holds about a tenth of the prompt (+ sink), not a formula's guess.
  const PolicySpec streaming = parse_policy("streaming:budget=0.1");
  const CellResult small = evaluate_cell(loaded.model, *loaded.tokenizer, loaded.eos_token_ids, samples, &streaming, 2);
  const ModelConfig& config = loaded.config;
  const double slot_bytes = config.num_layers * 2.0 * config.num_kv_heads * config.head_dim * 4;
  EXPECT_NEAR(small.kv_bytes / slot_bytes, std::ceil(0.1 * 256), 4);  // prompts of ~256 tokens
  EXPECT_LT(small.kv_bytes * 5, full.kv_bytes);
}

}  // namespace
}  // namespace kvforge::eval
