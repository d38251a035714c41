// KV Prediction: the predictor's exact identities, shapes, layer maps, the consistency loss, the predicted prefill's
// cache, the least-squares initialisation, the artifact round trip and the prefill FLOPs model.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "checkpoints/artifact.h"
#include "policies/kv_prediction.h"
#include "runtime/generate.h"
#include "runtime/model_flops.h"
#include "runtime/model_init.h"
#include "runtime/model_loader.h"
#include "test_util.h"
#include "trainers/kvpred/artifact.h"
#include "trainers/kvpred/auxiliary.h"
#include "trainers/kvpred/objective.h"
#include "trainers/pretrain/pretrain.h"

namespace kvforge {
namespace {

const at::TensorOptions kFloat = at::TensorOptions().dtype(at::kFloat);

// A left-padded batch of random prompts of `lengths` tokens, as generate() lays them out.
std::pair<at::Tensor, at::Tensor> left_padded(const std::vector<int64_t>& lengths, int64_t vocab, uint64_t seed) {
  at::manual_seed(seed);
  const int64_t longest = *std::max_element(lengths.begin(), lengths.end());
  at::Tensor ids = at::randint(0, vocab - 8, {static_cast<int64_t>(lengths.size()), longest}, at::kLong);
  at::Tensor positions = at::full_like(ids, -1);
  for (size_t b = 0; b < lengths.size(); ++b) {
    const int64_t pad = longest - lengths[b];
    positions[b].narrow(0, pad, lengths[b]).copy_(at::arange(lengths[b], at::kLong));
  }
  return {ids, positions};
}

// Right-padded training rows: positions 0.. then -1.
std::pair<at::Tensor, at::Tensor> right_padded(const std::vector<int64_t>& lengths, int64_t tokens, int64_t vocab,
                                               uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor ids = at::randint(0, vocab - 8, {static_cast<int64_t>(lengths.size()), tokens}, at::kLong);
  at::Tensor positions = at::full_like(ids, -1);
  for (size_t b = 0; b < lengths.size(); ++b) positions[b].narrow(0, 0, lengths[b]).copy_(at::arange(lengths[b]));
  return {ids, positions};
}

// A random auxiliary smaller than the tiny base in every dimension (its own head_dim and KV heads).
Transformer small_auxiliary() {
  ModelConfig config = make_byte_model_config(96, 256, 2, 4, 1, 1024, 10000.0);
  Transformer model(config, kFloat);
  initialize_weights(model, 11);
  return model;
}

TEST(KvPrediction, ExactCopyWithIdentityPredictorsGivesTheBaseLogits) {
  torch::NoGradGuard no_grad;
  Transformer& base = testing::tiny_base_model().model;
  KvPredictor predictor = kvpred::pruned_predictor(base, /*every=*/1, {}, kFloat);
  predictor->set_identity();

  // Inference: the predicted prefill of a left-padded batch equals the base reading its prompts.
  auto [ids, positions] = left_padded({37, 64, 50}, base->config.vocab_size, 21);
  FullKVCache own(base->config.num_layers, 3, base->config.num_kv_heads, base->config.head_dim, 80, kFloat);
  FullKVCache filled(base->config.num_layers, 3, base->config.num_kv_heads, base->config.head_dim, 80, kFloat);
  const at::Tensor expected = base->forward(ids, positions, &own, /*last_only=*/true);
  const at::Tensor got = predicted_prefill(base, predictor, ids, positions, filled);
  EXPECT_LT((got - expected).abs().max().item<double>(), 1e-4);

  // Training: the base attending to the predicted KV only equals the base on its own KV.
  auto [train_ids, train_positions] = right_padded({48, 30}, 48, base->config.vocab_size, 22);
  const PredictedKV truth = kvpred::true_kv(base, train_ids, train_positions);
  const PredictedKV predicted = predictor->predict(train_ids, train_positions, /*causal_prefix=*/true);
  for (int64_t l = 0; l < base->config.num_layers; ++l) {
    EXPECT_LT((predicted.keys[l] - truth.keys[l]).abs().max().item<double>(), 1e-5) << l;
    EXPECT_LT((predicted.values[l] - truth.values[l]).abs().max().item<double>(), 1e-5) << l;
  }
  PredictedKVCache cache(predicted, base->inv_freq, train_positions);
  const at::Tensor through_prediction = base->forward(train_ids, train_positions, &cache, false, true);
  const at::Tensor plain = base->forward(train_ids, train_positions, nullptr, false, true);
  const at::Tensor valid = (train_positions >= 0).unsqueeze(-1);
  EXPECT_LT(((through_prediction - plain).abs() * valid).max().item<double>(), 1e-4);
  EXPECT_LT(kvpred::consistency_l1(predicted, truth, train_positions, false).item<double>(), 1e-6);
}

TEST(KvPrediction, TrainingWithOwnKvAfterThePromptIsTheInferencePath) {
  torch::NoGradGuard no_grad;
  Transformer& base = testing::tiny_base_model().model;
  KvPredictor predictor = kvpred::pruned_predictor(base, 2, {}, kFloat);
  predictor->set_identity();  // then noise, so the prediction is far from the base's own KV
  at::manual_seed(41);
  for (const auto& parameter : predictor->parameters()) parameter.add_(at::randn_like(parameter) * 0.02);
  const int64_t prompt = 40, total = 48;
  const at::Tensor ids = at::randint(0, 250, {1, total}, at::kLong);
  const at::Tensor positions = at::arange(total, at::kLong).unsqueeze(0);
  TokenBatch batch;
  batch.input_ids = ids;
  batch.positions = positions;
  batch.prompt_tokens = at::tensor(std::vector<int64_t>{prompt}, at::kLong);
  const at::Tensor own_from = kvpred::own_kv_from(batch, 0);
  EXPECT_EQ(own_from.item<int64_t>(), prompt - 1);
  // Training form: the prediction below the prompt's last token, the base's own KV from there on.
  PredictedKVCache mixed(predictor->predict(ids, positions, true), base->inv_freq, positions, own_from);
  const at::Tensor trained =
      base->forward(ids, positions, &mixed, false, true).narrow(1, prompt - 1, total - prompt + 1);
  // Inference: predicted prefill of the prompt, then the answer read by the base on its cache.
  FullKVCache cache(base->config.num_layers, 1, base->config.num_kv_heads, base->config.head_dim, total, kFloat);
  const at::Tensor first =
      predicted_prefill(base, predictor, ids.narrow(1, 0, prompt), positions.narrow(1, 0, prompt), cache);
  const at::Tensor rest =
      base->forward(ids.narrow(1, prompt, total - prompt), positions.narrow(1, prompt, total - prompt), &cache);
  const at::Tensor inferred = at::cat({first, rest}, 1);
  EXPECT_LT((trained - inferred).abs().max().item<double>(), 1e-4);
  // ... and differs from predicting everywhere, which the base never meets at inference.
  PredictedKVCache everywhere(predictor->predict(ids, positions, true), base->inv_freq, positions);
  const at::Tensor all =
      base->forward(ids, positions, &everywhere, false, true).narrow(1, prompt - 1, total - prompt + 1);
  EXPECT_GT((all - inferred).abs().max().item<double>(), 1e-2);

  // Document windows have no prompt: a split drawn per row in [1, tokens - 1], fixed by the seed.
  TokenBatch document;
  document.input_ids = at::zeros({64, 10}, at::kLong);
  const at::Tensor splits = kvpred::own_kv_from(document, 7);
  EXPECT_GE(splits.min().item<int64_t>(), 1);
  EXPECT_LE(splits.max().item<int64_t>(), 9);
  EXPECT_GT(splits.max().item<int64_t>(), splits.min().item<int64_t>());
  EXPECT_TRUE(at::equal(splits, kvpred::own_kv_from(document, 7)));
}

TEST(KvPrediction, PredictedShapesEqualTheBaseShapesPerLayer) {
  torch::NoGradGuard no_grad;
  Transformer& base = testing::tiny_base_model().model;
  KvPredictor predictor = kvpred::separate_predictor(base, small_auxiliary(), {}, kFloat);
  EXPECT_EQ(predictor->layer_map, (std::vector<int64_t>{0, 0, 1}));  // 3 base layers over 2 auxiliary ones
  for (const auto& parameter : predictor->parameters()) parameter.normal_(0, 0.02);
  auto [ids, positions] = right_padded({20, 13}, 20, base->config.vocab_size, 5);
  at::Tensor logits;
  const PredictedKV predicted = predictor->predict(ids, positions, true, &logits);
  ASSERT_EQ(predicted.keys.size(), static_cast<size_t>(base->config.num_layers));
  const std::vector<int64_t> shape{2, base->config.num_kv_heads, 20, base->config.head_dim};
  for (int64_t l = 0; l < base->config.num_layers; ++l) {
    EXPECT_EQ(predicted.keys[l].sizes(), shape) << l;
    EXPECT_EQ(predicted.values[l].sizes(), shape) << l;
  }
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 20, base->config.vocab_size}));
  // The predictors read merged heads: [base kv width, auxiliary kv width].
  EXPECT_EQ(predictor->key_predictors[0]->as<Linear>()->weight.sizes(),
            (std::vector<int64_t>{base->config.num_kv_heads * base->config.head_dim, 24}));  // 1 KV head of 96 / 4
}

TEST(KvPrediction, LayerMapsAreValidated) {
  EXPECT_INPUT_ERROR(validate_layer_map({0, 1}, 3, 2, "recipe", "auxiliary.layer_map"), "auxiliary.layer_map",
                     "one auxiliary layer per base layer (3 entries), got 2");
  EXPECT_INPUT_ERROR(validate_layer_map({0, 1, 2}, 3, 2, "recipe", "auxiliary.layer_map"), "entry 2 is 2",
                     "layers are 0..1");
  EXPECT_INPUT_ERROR(validate_layer_map({0, -1, 1}, 3, 2, "recipe", "auxiliary.layer_map"), "entry 1 is -1");
  EXPECT_NO_THROW(validate_layer_map({1, 0, 1}, 3, 2, "recipe", "auxiliary.layer_map"));
  Transformer& base = testing::tiny_base_model().model;
  EXPECT_INPUT_ERROR(kvpred::pruned_predictor(base, 2, {0, 0, 2}, kFloat), "auxiliary.layer_map", "entry 2 is 2");
  EXPECT_INPUT_ERROR(kvpred::pruned_predictor(base, 4, {}, kFloat), "auxiliary.every", "1..3");
  EXPECT_EQ(kvpred::even_layer_map(6, 3), (std::vector<int64_t>{0, 0, 1, 1, 2, 2}));
  EXPECT_EQ(kvpred::even_layer_map(28, 16).back(), 15);
  ModelConfig other = base->config;
  other.vocab_size = 300;
  EXPECT_INPUT_ERROR(KvPredictor(base->config, other, std::vector<int64_t>{0, 0, 0}, kFloat), "vocab_size", "264");
}

TEST(KvPrediction, ConsistencyL1IgnoresPaddingAndAveragesOrSumsLayers) {
  at::manual_seed(8);
  auto [ids, positions] = right_padded({6, 4}, 6, 100, 9);
  PredictedKV predicted, truth;
  for (int l = 0; l < 3; ++l) {
    for (auto* kv : {&predicted, &truth}) {
      kv->keys.push_back(at::randn({2, 2, 6, 8}));
      kv->values.push_back(at::randn({2, 2, 6, 8}));
    }
  }
  const double mean = kvpred::consistency_l1(predicted, truth, positions, false).item<double>();
  const double sum = kvpred::consistency_l1(predicted, truth, positions, true).item<double>();
  EXPECT_NEAR(sum, 3 * mean, 1e-5 * sum);  // float32 means: relative to the magnitude
  // By hand: row 1 holds 4 valid tokens.
  double expected = 0;
  for (int l = 0; l < 3; ++l)
    for (auto [p, t] : {std::pair{predicted.keys[l], truth.keys[l]}, std::pair{predicted.values[l], truth.values[l]}})
      expected += at::cat({(p[0] - t[0]).abs().reshape({-1}),
                           (p[1].narrow(1, 0, 4) - t[1].narrow(1, 0, 4)).abs().reshape({-1})})
                      .mean()
                      .item<double>();
  EXPECT_NEAR(mean, expected / 3, 1e-5 * mean);
  for (int l = 0; l < 3; ++l) predicted.keys[l][1].narrow(1, 4, 2).fill_(1e6);  // padding: must not count
  EXPECT_NEAR(kvpred::consistency_l1(predicted, truth, positions, false).item<double>(), mean, 1e-5 * mean);
}

TEST(KvPrediction, CacheHoldsThePromptAfterTheFirstTokenAndGrowsByOne) {
  torch::NoGradGuard no_grad;
  Transformer& base = testing::tiny_base_model().model;
  KvPredictor predictor = kvpred::pruned_predictor(base, 2, {}, kFloat);
  for (const auto& parameter : predictor->parameters()) parameter.normal_(0, 0.02);
  std::vector<std::vector<int64_t>> prompts{{5, 9, 14, 3, 77, 41, 8, 8, 100, 2, 61}};
  KvPredictor shared = predictor;
  std::vector<int64_t> lengths;
  GenerationOptions options;
  options.max_new_tokens = 4;
  CacheFactory factory = [&](int64_t batch, int64_t capacity) {
    return std::make_unique<FullKVCache>(base->config.num_layers, batch, base->config.num_kv_heads,
                                         base->config.head_dim, capacity, kFloat);
  };
  PromptPrefill prefill = [&](const at::Tensor& ids, const at::Tensor& positions, KVCache& cache) {
    at::Tensor logits = predicted_prefill(base, shared, ids, positions, cache);
    lengths.push_back(cache.length(0));
    return logits;
  };
  // The cache length after the first token, then per step: a recording cache factory wraps the full one.
  struct Recording : FullKVCache {
    using FullKVCache::FullKVCache;
    std::vector<int64_t>* lengths = nullptr;
    CachedKV update(int64_t layer, const at::Tensor& k, const at::Tensor& v, const at::Tensor& p) override {
      CachedKV kv = FullKVCache::update(layer, k, v, p);
      if (layer == 0) lengths->push_back(length(0));
      return kv;
    }
  };
  factory = [&](int64_t batch, int64_t capacity) {
    auto cache = std::make_unique<Recording>(base->config.num_layers, batch, base->config.num_kv_heads,
                                             base->config.head_dim, capacity, kFloat);
    cache->lengths = &lengths;
    return cache;
  };
  generate(base, prompts, options, nullptr, factory, prefill);
  // updates: the predicted prompt (10), the last prompt token (11), then one per new token after the first
  EXPECT_EQ(lengths, (std::vector<int64_t>{10, 11, 11, 12, 13, 14}));
}

TEST(KvPrediction, LeastSquaresOnAnExactCopyFindsTheIdentity) {
  Transformer& base = testing::tiny_base_model().model;
  KvPredictor predictor = kvpred::pruned_predictor(base, 1, {}, kFloat);
  const int64_t vocab = base->config.vocab_size;
  BatchSource batches = [vocab](uint64_t seed, int64_t step, int64_t) {
    auto [ids, positions] = right_padded({96, 70, 96, 50}, 96, vocab, seed + static_cast<uint64_t>(step));
    TokenBatch batch;
    batch.input_ids = ids;
    batch.positions = positions;
    batch.labels = at::full_like(ids, -100);
    return batch;
  };
  const int64_t tokens = kvpred::fit_predictors(predictor, base, batches, 3, 2, 1e-9);
  EXPECT_EQ(tokens, 2 * (96 + 70 + 96 + 50));
  const at::Tensor eye = at::eye(base->config.num_kv_heads * base->config.head_dim);
  for (int64_t l = 0; l < base->config.num_layers; ++l) {
    EXPECT_LT((predictor->key_predictors[l]->as<Linear>()->weight - eye).abs().max().item<double>(), 1e-3) << l;
    EXPECT_LT(predictor->value_predictors[l]->as<Linear>()->bias.abs().max().item<double>(), 1e-3) << l;
  }
}

TEST(KvPrediction, ArtifactRoundTripPredictsTheSame) {
  torch::NoGradGuard no_grad;
  LoadedModel& tiny = testing::tiny_base_model();
  KvPredictor predictor = kvpred::separate_predictor(tiny.model, small_auxiliary(), {1, 0, 1}, kFloat);
  for (const auto& parameter : predictor->parameters()) parameter.normal_(0, 0.05);
  const std::string dir = testing::make_temp_dir("kvpred-artifact");
  write_artifact(dir + "/kvpred.safetensors",
                 kvpred::kv_prediction_artifact(predictor, "method: kvpred\n", {{"steps", 7}},
                                                {{"auxiliary_name", "small"}}, at::kFloat));
  auto artifact = std::make_shared<const Artifact>(read_artifact(dir + "/kvpred.safetensors"));
  EXPECT_EQ(kv_prediction_description(*artifact), "small, 7 steps");
  const auto weights = kv_prediction_weights(artifact, tiny.config);
  EXPECT_EQ(weights->layer_map(), (std::vector<int64_t>{1, 0, 1}));
  KvPredictor loaded = weights->on(kFloat);
  auto [ids, positions] = right_padded({12, 9}, 12, tiny.config.vocab_size, 4);
  const PredictedKV a = predictor->predict(ids, positions), b = loaded->predict(ids, positions);
  for (int64_t l = 0; l < tiny.config.num_layers; ++l) EXPECT_TRUE(at::equal(a.keys[l], b.keys[l])) << l;

  Artifact broken = *artifact;
  broken.tensors.erase("value_predictors.2.bias");
  EXPECT_INPUT_ERROR(kv_prediction_weights(std::make_shared<const Artifact>(broken), tiny.config),
                     "value_predictors.2.bias", "missing");
  broken = *artifact;
  broken.attributes.clear();
  EXPECT_INPUT_ERROR(kv_prediction_weights(std::make_shared<const Artifact>(broken), tiny.config), "auxiliary_config");
  broken = *artifact;
  broken.tensors["layer_map"] = at::tensor(std::vector<int64_t>{0, 5, 1}, at::kLong);
  EXPECT_INPUT_ERROR(kv_prediction_weights(std::make_shared<const Artifact>(broken), tiny.config), "layer_map",
                     "entry 1 is 5");
}

TEST(KvPrediction, PrefillFlopsAddUpAndShrinkWithTheAuxiliary) {
  const ModelConfig& config = testing::tiny_base_model().config;
  // A prefill of N tokens costs what N one-token steps cost, the output head aside.
  double steps = 0;
  for (int64_t i = 0; i < 300; ++i) steps += forward_flops(config, 1, i, 0);
  EXPECT_NEAR(forward_flops(config, 300, 0, 0), steps, 1e-6 * steps);
  EXPECT_NEAR(forward_flops(config, 300, 0, 1) - forward_flops(config, 300, 0, 0),
              2.0 * config.hidden_size * config.vocab_size, 1);
  ModelConfig half = config;
  half.num_layers = 1;
  half.sliding_window.resize(1);
  const double ratio = forward_flops(config, 4096, 0, 1) / kv_prediction_prefill_flops(config, half, 4096);
  EXPECT_GT(ratio, 2.5);  // one of three layers reads the prompt
  EXPECT_LT(ratio, 3.0);  // plus the predictors and the base's last token
}

// On CUDA the training form takes the fused causal path (the predicted cache returns the step's own slots).
TEST(KvPredictionGpu, TrainingFormOnTheFusedPathGivesTheBaseLogits) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (CI has none; run on the GPU machine)";
  torch::NoGradGuard no_grad;
  const at::TensorOptions cuda = kFloat.device(at::kCUDA);
  LoadedModel gpu = load_model(testing::fixture("../../models/tiny-base"), at::Device(at::kCUDA, 0), at::kFloat);
  KvPredictor predictor = kvpred::pruned_predictor(gpu.model, 1, {}, cuda);
  predictor->set_identity();
  auto [ids, positions] = right_padded({64, 40}, 64, gpu.config.vocab_size, 31);
  ids = ids.cuda(), positions = positions.cuda();
  const PredictedKV predicted = predictor->predict(ids, positions, true);
  PredictedKVCache cache(predicted, gpu.model->inv_freq, positions);
  const at::Tensor fused = gpu.model->forward(ids, positions, &cache, false, true);
  const at::Tensor plain = gpu.model->forward(ids, positions, nullptr, false, true);
  const at::Tensor valid = (positions >= 0).unsqueeze(-1);
  EXPECT_LT(((fused - plain).abs() * valid).max().item<double>(), 1e-3);
  // And the inference form on CUDA in bf16: the predicted prefill's first token matches the base's.
  LoadedModel bf16 = load_model(testing::fixture("../../models/tiny-base"), at::Device(at::kCUDA, 0), at::kBFloat16);
  KvPredictor copy = kvpred::pruned_predictor(bf16.model, 1, {}, kFloat.device(at::kCUDA).dtype(at::kBFloat16));
  copy->set_identity();
  auto [prompt, prompt_positions] = left_padded({90, 57}, bf16.config.vocab_size, 32);
  FullKVCache own(3, 2, bf16.config.num_kv_heads, bf16.config.head_dim, 96, cuda.dtype(at::kBFloat16));
  FullKVCache filled(3, 2, bf16.config.num_kv_heads, bf16.config.head_dim, 96, cuda.dtype(at::kBFloat16));
  const at::Tensor expected = bf16.model->forward(prompt.cuda(), prompt_positions.cuda(), &own, true);
  const at::Tensor got = predicted_prefill(bf16.model, copy, prompt.cuda(), prompt_positions.cuda(), filled);
  EXPECT_EQ(got.argmax(-1).cpu().equal(expected.argmax(-1).cpu()), true);
  EXPECT_LT((got.to(at::kFloat) - expected.to(at::kFloat)).abs().max().item<double>(), 0.1);
}

}  // namespace
}  // namespace kvforge
