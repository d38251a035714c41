// Lizard's and LoLCATs' hybrid attention: Hedgehog features, the quadratic, chunked and recurrent forms agreeing,
// and the identities the method rests on (a full window is softmax, γ ≡ 1 is ungated, sinks at -∞ vanish).
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cmath>

#include "runtime/hybrid_attention.h"
#include "runtime/linearized_attention.h"
#include "runtime/model_loader.h"
#include "runtime/transformer.h"
#include "test_util.h"
#include "trainers/lizard/attention_transfer.h"
#include "trainers/lizard/fine_tune.h"

namespace kvforge {
namespace {

struct Shapes {
  int64_t batch = 2, heads = 3, tokens = 37, head_dim = 8, features = 6, value_dim = 8, sinks = 4;
};

// Fresh random inputs: features from a Hedgehog map, gates in (0, 1), sink and window logits.
HybridInputs random_inputs(const Shapes& s, at::ScalarType dtype, uint64_t seed) {
  at::manual_seed(seed);
  const at::TensorOptions options = at::TensorOptions().dtype(dtype);
  HybridInputs in;
  in.queries = at::randn({s.batch, s.heads, s.tokens, s.head_dim}, options);
  in.keys = at::randn({s.batch, s.heads, s.tokens, s.head_dim}, options);
  in.values = at::randn({s.batch, s.heads, s.tokens, s.value_dim}, options);
  const at::Tensor weight = at::randn({s.heads, s.head_dim, s.features / 2}, options);
  in.query_features = hedgehog_features(in.queries, weight);
  in.key_features = hedgehog_features(in.keys, weight * 0.7);
  in.log_gates = at::log_sigmoid(at::randn({s.batch, s.heads, s.tokens}, options) + 2);
  in.sink_logits = at::randn({s.heads, s.sinks}, options);
  in.window_logits = at::randn({s.heads}, options);
  return in;
}

double max_difference(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST(Lizard, HedgehogFeaturesArePositiveAndHalvesSumToOne) {
  at::manual_seed(1);
  const at::Tensor x = at::randn({2, 3, 11, 8}) * 5, weight = at::randn({3, 8, 16});
  const at::Tensor features = hedgehog_features(x, weight);
  EXPECT_EQ(features.sizes(), (std::vector<int64_t>{2, 3, 11, 32}));
  EXPECT_GT(features.min().item<double>(), 0.0);  // x·W reaches ±100 here: softmax alone would underflow to 0
  EXPECT_LT((features.narrow(-1, 0, 16).sum(-1) - 1).abs().max().item<double>(), 1e-5);
  EXPECT_LT((features.narrow(-1, 16, 16).sum(-1) - 1).abs().max().item<double>(), 1e-5);
}

TEST(Lizard, QuadraticChunkedAndRecurrentFormsAgree) {
  Shapes shapes;
  shapes.value_dim = 5;  // values need not be as wide as keys
  for (HybridKind kind : {HybridKind::kLizard, HybridKind::kLolcats}) {
    for (LinearKeys keys : {LinearKeys::kOutsideWindow, LinearKeys::kAll}) {
      if (kind == HybridKind::kLolcats && keys == LinearKeys::kAll) continue;
      for (int64_t window : {1, 5, 16, 64}) {
        for (int64_t chunk : {1, 8, 64}) {
          HybridAttentionConfig config;
          config.kind = kind;
          config.window = window;
          config.linear_keys = keys;
          config.window_scale = 0.8;
          const std::string where = "kind " + std::to_string(static_cast<int>(kind)) + " keys " +
                                    std::to_string(static_cast<int>(keys)) + " window " + std::to_string(window) +
                                    " chunk " + std::to_string(chunk);
          for (at::ScalarType dtype : {at::kDouble, at::kFloat}) {
            HybridInputs in = random_inputs(shapes, dtype, 7 + window + chunk);
            if (kind == HybridKind::kLolcats) in.log_gates = at::Tensor();
            const double tolerance = dtype == at::kDouble ? 1e-10 : 1e-5;
            const at::Tensor quadratic = hybrid_attention_quadratic(in, config);
            EXPECT_TRUE(at::isfinite(quadratic).all().item<bool>()) << where;
            EXPECT_LT(max_difference(hybrid_attention_chunked(in, config, chunk), quadratic), tolerance) << where;
            if (chunk == 8)
              EXPECT_LT(max_difference(hybrid_attention_recurrent(in, config), quadratic), tolerance) << where;
          }
        }
      }
    }
  }
}

// Causal softmax attention per head, through the runtime's own masked attention (its softmax runs in fp32, hence
// the 1e-6 below on float64 inputs).
at::Tensor causal_softmax(const HybridInputs& in) {
  const int64_t batch = in.queries.size(0), tokens = in.queries.size(2);
  const at::Tensor positions = at::arange(tokens, at::kLong).unsqueeze(0).expand({batch, tokens});
  return grouped_attention(in.queries, in.keys, in.values, attention_mask(positions, positions, 0));
}

TEST(Lizard, WindowAsLongAsTheSequenceIsExactSoftmax) {
  const Shapes shapes;
  HybridInputs in = random_inputs(shapes, at::kDouble, 3);
  in.sink_logits = at::Tensor();
  const at::Tensor softmax = causal_softmax(in);
  HybridAttentionConfig config;
  config.window = shapes.tokens;
  EXPECT_LT(max_difference(hybrid_attention_chunked(in, config, 8), softmax), 1e-6);
  config.kind = HybridKind::kLolcats;  // its window weight cancels when every key is in the window
  in.log_gates = at::Tensor();
  EXPECT_LT(max_difference(hybrid_attention_chunked(in, config, 8), softmax), 1e-6);
  config.window = shapes.tokens - 1;  // one key short: no longer softmax
  EXPECT_GT(max_difference(hybrid_attention_chunked(in, config, 8), softmax), 1e-3);
}

TEST(Lizard, GatesOfOneGiveUngatedLinearAttentionPlusTheWindow) {
  const Shapes shapes;
  HybridInputs in = random_inputs(shapes, at::kDouble, 4);
  in.log_gates = at::zeros_like(in.log_gates);
  HybridAttentionConfig config;
  config.window = 6;
  // Ungated linear attention over the keys outside the window, by prefix sums, plus the window's softmax with sinks.
  const at::Tensor kv = (in.key_features.unsqueeze(-1) * in.values.unsqueeze(-2)).cumsum(2);  // [b, h, t, f, dv]
  const at::Tensor k_sum = in.key_features.cumsum(2);
  const int64_t t = shapes.tokens, w = config.window;
  at::Tensor linear = at::zeros_like(in.values);
  const at::Tensor q = in.query_features.narrow(2, w, t - w);
  const at::Tensor numerator = at::matmul(q.unsqueeze(-2), kv.narrow(2, 0, t - w)).squeeze(-2);
  const at::Tensor denominator = (q * k_sum.narrow(2, 0, t - w)).sum(-1, true);
  linear.narrow(2, w, t - w).copy_(numerator / denominator);
  HybridInputs window_only = in;
  window_only.query_features = at::zeros_like(in.query_features);  // the linear branch silenced
  const at::Tensor expected = linear + hybrid_attention_quadratic(window_only, config);
  // float64, relative to the outputs' size: a small linear denominator makes some of them large, and the chunked and
  // prefix-sum orders of summation differ (1.3e-9 absolute seen on a clean CI run).
  const double scale = expected.abs().max().item<double>();
  EXPECT_LT(max_difference(hybrid_attention_chunked(in, config, 8), expected) / scale, 1e-8);
  // ... and real gates change the answer.
  EXPECT_GT(max_difference(hybrid_attention_chunked(random_inputs(shapes, at::kDouble, 4), config, 8), expected), 1e-3);
}

TEST(Lizard, SinkLogitsAtMinusInfinityRecoverSlidingWindowSoftmax) {
  const Shapes shapes;
  HybridInputs in = random_inputs(shapes, at::kDouble, 5);
  in.query_features = at::zeros_like(in.query_features);  // the window branch alone
  HybridAttentionConfig config;
  config.window = 7;
  const int64_t batch = shapes.batch, tokens = shapes.tokens;
  const at::Tensor positions = at::arange(tokens, at::kLong).unsqueeze(0).expand({batch, tokens});
  const at::Tensor sliding =
      grouped_attention(in.queries, in.keys, in.values, attention_mask(positions, positions, config.window));
  in.sink_logits = at::full({shapes.heads, shapes.sinks}, -std::numeric_limits<double>::infinity(), at::kDouble);
  EXPECT_LT(max_difference(hybrid_attention_chunked(in, config, 8), sliding), 1e-6);  // fp32 softmax there
  EXPECT_LT(max_difference(hybrid_attention_recurrent(in, config), sliding), 1e-6);
  in.sink_logits = at::zeros({shapes.heads, shapes.sinks}, at::kDouble);  // finite sinks take weight, carry no value
  const at::Tensor damped = hybrid_attention_chunked(in, config, 8);
  EXPECT_LT(damped.norm().item<double>(), sliding.norm().item<double>());
}

TEST(Lizard, DecodeStateDoesNotGrowWithTheSequence) {
  Shapes shapes;
  shapes.tokens = 1;
  HybridAttentionConfig config;
  config.window = 16;
  HybridDecodeState state(config, shapes.batch, shapes.heads, shapes.features, shapes.head_dim, shapes.value_dim,
                          at::TensorOptions().dtype(at::kFloat));
  const int64_t initial = state.bytes();
  EXPECT_GT(initial, 0);
  for (int64_t t = 0; t < 300; ++t) {
    const HybridInputs in = random_inputs(shapes, at::kFloat, 100 + t);
    const at::Tensor y = state.step(in.query_features, in.key_features, in.queries, in.keys, in.values, in.log_gates,
                                    in.sink_logits, in.window_logits);
    ASSERT_TRUE(at::isfinite(y).all().item<bool>()) << t;
    if (t == 10 || t == 299) EXPECT_EQ(state.bytes(), initial) << t;
  }
  EXPECT_EQ(state.tokens(), 300);
}

// `inputs` with `pad` invalid tokens of noise in front of every row.
HybridInputs left_padded(const HybridInputs& in, int64_t pad) {
  HybridInputs padded = in;
  for (at::Tensor* t : {&padded.query_features, &padded.key_features, &padded.queries, &padded.keys, &padded.values}) {
    std::vector<int64_t> shape = t->sizes().vec();
    shape[2] = pad;
    *t = at::cat({at::rand(shape, t->options()) + 0.5, *t}, 2);
  }
  padded.log_gates = at::cat(
      {at::full({in.log_gates.size(0), in.log_gates.size(1), pad}, -3.0, in.log_gates.options()), in.log_gates}, 2);
  padded.key_valid = at::cat(
      {at::zeros({in.queries.size(0), pad}, at::kBool), at::ones({in.queries.size(0), in.queries.size(2)}, at::kBool)},
      1);
  return padded;
}

TEST(Lizard, PaddingKeysAreInvisibleToEveryForm) {
  Shapes shapes;
  shapes.tokens = 30;
  const HybridInputs in = random_inputs(shapes, at::kDouble, 12);
  const HybridInputs padded = left_padded(in, 11);
  HybridAttentionConfig config;
  config.window = 6;
  const at::Tensor expected = hybrid_attention_quadratic(in, config);
  auto real = [&](const at::Tensor& y) { return y.narrow(2, 11, shapes.tokens); };
  EXPECT_LT(max_difference(real(hybrid_attention_quadratic(padded, config)), expected), 1e-10);
  EXPECT_LT(max_difference(real(hybrid_attention_chunked(padded, config, 8)), expected), 1e-10);
  EXPECT_LT(max_difference(real(hybrid_attention_recurrent(padded, config)), expected), 1e-10);
}

TEST(Lizard, AbsorbingAPromptLeavesTheStateTheStepsWould) {
  Shapes shapes;
  shapes.tokens = 45;
  for (LinearKeys keys : {LinearKeys::kOutsideWindow, LinearKeys::kAll}) {
    for (int64_t prompt : {3, 20}) {
      HybridInputs in = left_padded(random_inputs(shapes, at::kDouble, 13), 4);
      HybridAttentionConfig config;
      config.window = 8;
      config.linear_keys = keys;
      const at::Tensor expected = hybrid_attention_recurrent(in, config);
      HybridDecodeState state(config, shapes.batch, shapes.heads, shapes.features, shapes.head_dim, shapes.value_dim,
                              at::TensorOptions().dtype(at::kDouble));
      const int64_t total = in.queries.size(2), read = prompt + 4;
      HybridInputs head = in;
      for (at::Tensor* t :
           {&head.query_features, &head.key_features, &head.queries, &head.keys, &head.values, &head.log_gates})
        *t = t->narrow(2, 0, read);
      head.key_valid = in.key_valid.narrow(1, 0, read);
      state.absorb(head);
      EXPECT_EQ(state.tokens(), read);
      for (int64_t t = read; t < total; ++t) {
        auto at_t = [t](const at::Tensor& x) { return x.narrow(2, t, 1); };
        const at::Tensor y =
            state.step(at_t(in.query_features), at_t(in.key_features), at_t(in.queries), at_t(in.keys), at_t(in.values),
                       at_t(in.log_gates), in.sink_logits, in.window_logits, in.key_valid.select(1, t));
        EXPECT_LT(max_difference(y, expected.narrow(2, t, 1)), 1e-10) << "prompt " << prompt << " token " << t;
      }
    }
  }
}

TEST(Lizard, ChunkedFormStaysFiniteUnderStrongDecay) {
  Shapes shapes;
  shapes.tokens = 200;
  HybridInputs in = random_inputs(shapes, at::kFloat, 9);
  in.log_gates = at::full_like(in.log_gates, -30.0);  // the cumulative gate reaches -6000: exp would underflow
  HybridAttentionConfig config;
  config.window = 4;
  const at::Tensor chunked = hybrid_attention_chunked(in, config, 64);
  EXPECT_TRUE(at::isfinite(chunked).all().item<bool>());
  HybridInputs reference = in;
  for (at::Tensor* t : {&reference.queries, &reference.keys, &reference.values, &reference.query_features,
                        &reference.key_features, &reference.log_gates, &reference.sink_logits})
    *t = t->to(at::kDouble);
  EXPECT_LT(max_difference(chunked.to(at::kDouble), hybrid_attention_quadratic(reference, config)), 1e-4);
}

// Right-padded training rows of random tokens.
BatchSource random_batches(int64_t rows, int64_t tokens, int64_t vocab) {
  return [=](uint64_t seed, int64_t step, int64_t micro_batch) {
    at::manual_seed(mix_seed({seed, static_cast<uint64_t>(step), static_cast<uint64_t>(micro_batch)}));
    TokenBatch batch;
    batch.input_ids = at::randint(0, vocab - 8, {rows, tokens}, at::kLong);
    batch.positions = at::arange(tokens, at::kLong).unsqueeze(0).repeat({rows, 1});
    batch.positions[rows - 1].narrow(0, tokens / 2, tokens - tokens / 2).fill_(-1);  // one row half padding
    batch.labels = at::full_like(batch.input_ids, -100);
    return batch;
  };
}

TEST(LizardTransfer, AWindowOverTheWholeSequenceTransfersExactly) {
  Transformer& model = testing::tiny_base_model().model;
  LinearizationConfig config;
  config.attention.window = 64;
  config.sinks = 0;
  config.feature_dim = 16;
  Linearization linearization(model->config, config, at::TensorOptions().dtype(at::kFloat));
  lizard::AttentionTransferObjective objective(model, linearization, random_batches(3, 64, model->config.vocab_size),
                                               1);
  EXPECT_LT(objective.held_out(2), 1e-10);  // the student is the teacher's softmax: nothing to transfer
  config.attention.window = 16;             // a real window: the linear branch now stands in for 48 keys
  Linearization shorter(model->config, config, at::TensorOptions().dtype(at::kFloat));
  lizard::AttentionTransferObjective real(model, shorter, random_batches(3, 64, model->config.vocab_size), 1);
  EXPECT_GT(real.held_out(2), 1e-6);
}

TEST(LizardTransfer, TheTeachersOutputFeedsTheNextLayer) {
  torch::NoGradGuard no_grad;
  Transformer& model = testing::tiny_base_model().model;
  LinearizationConfig config;
  config.attention.window = 8;
  Linearization linearization(model->config, config, at::TensorOptions().dtype(at::kFloat));
  const TokenBatch batch = random_batches(2, 40, model->config.vocab_size)(3, 0, 0);
  const at::Tensor plain = model->hidden_states(batch.input_ids, batch.positions, nullptr, true);
  linearization.attention_transfer = true;
  model->set_linearization(&linearization);
  const at::Tensor transferring = model->hidden_states(batch.input_ids, batch.positions, nullptr, true);
  linearization.attention_transfer = false;
  const at::Tensor linearized = model->hidden_states(batch.input_ids, batch.positions, nullptr, true);
  model->set_linearization(nullptr);
  EXPECT_TRUE(at::equal(transferring, plain));
  EXPECT_GT((linearized - plain).abs().max().item<double>(), 1e-3);  // the student alone is not the teacher
  EXPECT_TRUE(linearization.transfer_loss.defined());
}

LinearizationConfig small_linearization(HybridKind kind) {
  LinearizationConfig config;
  config.attention.kind = kind;
  config.attention.window = 8;
  config.feature_dim = 16;
  return config;
}

TEST(LizardTransfer, TrainingTheFeatureMapsAndGatesLowersTheTransferLoss) {
  Transformer& model = testing::tiny_base_model().model;
  const at::Tensor query_weight = model->named_parameters()["model.layers.1.self_attn.q_proj.weight"].clone();
  for (HybridKind kind : {HybridKind::kLizard, HybridKind::kLolcats}) {
    const LinearizationConfig config = small_linearization(kind);
    Linearization linearization(model->config, config, at::TensorOptions().dtype(at::kFloat));
    lizard::AttentionTransferObjective objective(model, linearization, random_batches(4, 96, model->config.vocab_size),
                                                 5);
    const double before = objective.held_out(2);
    LoopConfig loop;
    loop.steps = 40;
    loop.schedule.kind = "constant";
    loop.schedule.peak_lr = 2e-2;
    loop.schedule.total_steps = 40;
    loop.log_every = 0;
    loop.out_dir = testing::make_temp_dir("lizard-transfer");
    run_training(objective, loop, nullptr);
    const double after = objective.held_out(2);
    EXPECT_LT(after, 0.8 * before) << "kind " << static_cast<int>(kind) << ": " << before << " -> " << after;
  }
  // Only the linearization learned: the model's own weights are untouched.
  EXPECT_TRUE(at::equal(model->named_parameters()["model.layers.1.self_attn.q_proj.weight"], query_weight));
}

TEST(LizardDecode, GeneratingThroughTheStateMatchesTheWholeSequenceForward) {
  torch::NoGradGuard no_grad;
  Transformer& model = testing::tiny_base_model().model;
  for (HybridKind kind : {HybridKind::kLizard, HybridKind::kLolcats}) {
    const LinearizationConfig config = small_linearization(kind);
    Linearization linearization(model->config, config, at::TensorOptions().dtype(at::kFloat));
    for (const at::Tensor& parameter : linearization.parameters()) parameter.add_(at::randn_like(parameter) * 0.1);
    model->set_linearization(&linearization);
    // Two prompts of 30 and 19 tokens, left padded, then 6 tokens read one at a time.
    at::manual_seed(17);
    const int64_t longest = 30, extra = 6;
    const at::Tensor ids = at::randint(0, 250, {2, longest + extra}, at::kLong);
    at::Tensor positions = at::arange(longest + extra, at::kLong).unsqueeze(0).repeat({2, 1});
    positions[1] = positions[1] - (longest - 19);
    positions[1].narrow(0, 0, longest - 19).fill_(-1);
    LinearizedCache cache(config, model->config.num_layers);
    std::vector<at::Tensor> stepped{model->forward(ids.narrow(1, 0, longest), positions.narrow(1, 0, longest), &cache)};
    for (int64_t t = longest; t < longest + extra; ++t)
      stepped.push_back(model->forward(ids.narrow(1, t, 1), positions.narrow(1, t, 1), &cache));
    const int64_t bytes = cache.bytes();
    EXPECT_EQ(cache.length(0), longest + extra);
    // The whole sequence at once, row by row without padding.
    const at::Tensor all = at::cat(stepped, 1);
    for (int64_t row = 0; row < 2; ++row) {
      const int64_t pad = row == 0 ? 0 : longest - 19;
      const at::Tensor row_ids = ids[row].narrow(0, pad, longest + extra - pad).unsqueeze(0);
      const at::Tensor row_positions = at::arange(longest + extra - pad, at::kLong).unsqueeze(0);
      const at::Tensor whole = model->forward(row_ids, row_positions, nullptr);
      EXPECT_LT((all[row].narrow(0, pad, longest + extra - pad) - whole[0]).abs().max().item<double>(), 1e-4)
          << "kind " << static_cast<int>(kind) << " row " << row;
    }
    // Another 40 tokens: the state does not grow.
    for (int64_t t = 0; t < 40; ++t)
      model->forward(ids.narrow(1, 0, 1), (positions.narrow(1, 0, 1).clamp_min(0) + 100 + t), &cache);
    EXPECT_EQ(cache.bytes(), bytes);
    model->set_linearization(nullptr);
  }
}

// Each layer's q, k, v, o weights of the model.
std::vector<std::array<at::Tensor, 4>> projection_weights(Transformer& model) {
  std::vector<std::array<at::Tensor, 4>> weights;
  auto named = model->named_parameters();
  for (int64_t l = 0; l < model->config.num_layers; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".self_attn.";
    weights.push_back({named[prefix + "q_proj.weight"], named[prefix + "k_proj.weight"],
                       named[prefix + "v_proj.weight"], named[prefix + "o_proj.weight"]});
  }
  return weights;
}

TEST(LizardLora, AdaptersStartAsTheIdentityAndAddScaledLowRankProducts) {
  torch::NoGradGuard no_grad;
  Transformer& model = testing::tiny_base_model().model;
  Linearization linearization(model->config, small_linearization(HybridKind::kLizard),
                              at::TensorOptions().dtype(at::kFloat));
  for (const at::Tensor& parameter : linearization.parameters()) parameter.add_(at::randn_like(parameter) * 0.1);
  LoraConfig lora;
  lora.rank = 4;
  lora.alpha = 12;
  lora.targets = kLoraQuery | kLoraValue | kLoraOutput;
  Linearization adapted = linearization.with_lora(lora, 3);
  const TokenBatch batch = random_batches(2, 40, model->config.vocab_size)(9, 0, 0);
  auto logits = [&](Linearization* attached) {
    model->set_linearization(attached);
    const at::Tensor out = model->forward(batch.input_ids, batch.positions, nullptr, false, true);
    model->set_linearization(nullptr);
    return out;
  };
  // B = 0: the adapted model is the stage-1 model exactly.
  EXPECT_TRUE(at::equal(logits(&adapted), logits(&linearization)));
  EXPECT_FALSE(adapted.layers[0]->lora_a[1].defined());  // k is not a target
  EXPECT_GT(adapted.layers[0]->lora_a[0].abs().min().item<double>(), 0.0);

  // With B drawn: W x + (alpha / rank)·B A x, against float64.
  for (const at::Tensor& b : adapted.lora_parameters()) b.copy_(at::randn_like(b) * 0.1);
  const auto weights = projection_weights(model);
  const at::Tensor x = at::randn({3, 5, model->config.hidden_size});
  const at::Tensor projected = adapted.project(2, kLoraValue, x, weights[2][2], at::Tensor());
  const LinearizedLayer& layer = adapted.layers[2];
  const at::Tensor expected =
      at::linear(x.to(at::kDouble), weights[2][2].to(at::kDouble)) +
      at::linear(at::linear(x.to(at::kDouble), layer->lora_a[2].to(at::kDouble)), layer->lora_b[2].to(at::kDouble)) *
          3.0;
  EXPECT_LT((projected.to(at::kDouble) - expected).abs().max().item<double>(),
            1e-6 * expected.abs().max().item<double>());

  // Merged weights are the same model.
  const Linearization merged = adapted.merged(weights);
  EXPECT_FALSE(merged.layers[0]->lora_a[0].defined());
  EXPECT_TRUE(merged.layers[0]->merged_weight[0].defined());
  EXPECT_FALSE(merged.layers[0]->merged_weight[1].defined());
  Linearization merged_copy = merged.on(at::TensorOptions().dtype(at::kFloat));
  const at::Tensor adapted_logits = logits(&adapted);
  EXPECT_GT((adapted_logits - logits(&linearization)).abs().max().item<double>(), 1e-3);
  EXPECT_LT((logits(&merged_copy) - adapted_logits).abs().max().item<double>(),
            1e-5 * adapted_logits.abs().max().item<double>());
}

TEST(LizardLora, StageTwoLowersTheLanguageModelLossTrainingOnlyTheAdapters) {
  Transformer& model = testing::tiny_base_model().model;
  const at::Tensor query_weight = model->named_parameters()["model.layers.1.self_attn.q_proj.weight"].clone();
  Linearization linearization(model->config, small_linearization(HybridKind::kLizard),
                              at::TensorOptions().dtype(at::kFloat));
  LoraConfig lora;
  lora.rank = 8;
  Linearization adapted = linearization.with_lora(lora, 1);
  const at::Tensor feature_map = adapted.layers[0]->query_map.clone();
  // Batches with labels: the tiny model's own task text.
  const LoadedModel& loaded = testing::tiny_base_model();
  TaskMixture mixture;
  mixture.tasks = {"passkey"};
  mixture.min_tokens = 64;
  mixture.max_tokens = 96;
  const BatchSource batches = [&](uint64_t seed, int64_t step, int64_t micro) {
    TaskMixture drawn = mixture;
    drawn.seed = seed;
    return make_task_batch(drawn, *loaded.tokenizer, loaded.eos_token_ids.front(),
                           loaded.config.pad_token_id.value_or(0), step, micro, 3);
  };
  lizard::FineTuneObjective objective(model, adapted, batches, 2, /*train_linearization=*/false);
  const double before = lizard::held_out_language_model_loss(model, &adapted, batches, 2, 2);
  EXPECT_NEAR(before, lizard::held_out_language_model_loss(model, &linearization, batches, 2, 2), 1e-9);
  LoopConfig loop;
  loop.steps = 25;
  loop.schedule.kind = "constant";
  loop.schedule.peak_lr = 3e-3;
  loop.schedule.total_steps = 25;
  loop.log_every = 0;
  loop.out_dir = testing::make_temp_dir("lizard-lora");
  run_training(objective, loop, nullptr);
  const double after = lizard::held_out_language_model_loss(model, &adapted, batches, 2, 2);
  EXPECT_LT(after, before - 0.05) << before << " -> " << after;
  EXPECT_TRUE(at::equal(adapted.layers[0]->query_map, feature_map));  // stage 1's parameters stayed
  EXPECT_TRUE(at::equal(model->named_parameters()["model.layers.1.self_attn.q_proj.weight"], query_weight));
  EXPECT_GT(lizard::held_out_language_model_loss(model, nullptr, batches, 2, 2), 0.0);
}

TEST(LizardLora, UngatedLizardHasNoGateAndDecaysNothing) {
  LinearizationConfig config = small_linearization(HybridKind::kLizard);
  config.gates = false;
  Transformer& model = testing::tiny_base_model().model;
  Linearization ungated(model->config, config, at::TensorOptions().dtype(at::kFloat));
  for (const auto& [name, parameter] : ungated.named_parameters()) EXPECT_EQ(name.find("gate"), std::string::npos);
  EXPECT_TRUE(ungated.layers[0]->sink_logits.defined());
}

TEST(LizardGpu, ChunkedFormInBf16MatchesTheFloat64Reference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (CI has none; run on the GPU machine)";
  Shapes shapes;
  shapes.tokens = 300;
  shapes.head_dim = shapes.value_dim = 64;
  shapes.features = 128;
  HybridAttentionConfig config;
  config.window = 64;
  const HybridInputs reference = random_inputs(shapes, at::kDouble, 41);
  HybridInputs device = reference;
  for (at::Tensor* t : {&device.query_features, &device.key_features, &device.queries, &device.keys, &device.values,
                        &device.log_gates, &device.sink_logits})
    *t = t->to(at::kCUDA, at::kBFloat16);
  const at::Tensor expected = hybrid_attention_quadratic(reference, config);
  const at::Tensor chunked = hybrid_attention_chunked(device, config, 64).to(at::kCPU, at::kDouble);
  EXPECT_LT(max_difference(chunked, expected), 3e-2 * expected.abs().max().item<double>());
  HybridDecodeState state(config, shapes.batch, shapes.heads, shapes.features, shapes.head_dim, shapes.value_dim,
                          device.values.options());
  HybridInputs prompt = device;
  for (at::Tensor* t :
       {&prompt.query_features, &prompt.key_features, &prompt.queries, &prompt.keys, &prompt.values, &prompt.log_gates})
    *t = t->narrow(2, 0, shapes.tokens - 1);
  state.absorb(prompt);
  auto last = [&](const at::Tensor& t) { return t.narrow(2, shapes.tokens - 1, 1); };
  const at::Tensor stepped =
      state.step(last(device.query_features), last(device.key_features), last(device.queries), last(device.keys),
                 last(device.values), last(device.log_gates), device.sink_logits, {});
  EXPECT_LT(max_difference(stepped.to(at::kCPU, at::kDouble), last(expected)),
            3e-2 * expected.abs().max().item<double>());
}

TEST(LizardGpu, FusedDecodeStepMatchesTheFloat64Reference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (CI has none; run on the GPU machine)";
  struct Case {
    HybridKind kind;
    LinearKeys keys;
    int64_t window, head_dim;
    at::ScalarType dtype;
  };
  const std::vector<Case> cases = {
      {HybridKind::kLizard, LinearKeys::kOutsideWindow, 16, 64, at::kFloat},
      {HybridKind::kLizard, LinearKeys::kOutsideWindow, 64, 128, at::kBFloat16},
      {HybridKind::kLizard, LinearKeys::kAll, 8, 64, at::kFloat},
      {HybridKind::kLolcats, LinearKeys::kOutsideWindow, 16, 128, at::kFloat},
      {HybridKind::kLolcats, LinearKeys::kOutsideWindow, 64, 64, at::kBFloat16},
  };
  for (const Case& c : cases) {
    Shapes shapes;
    shapes.batch = 3;
    shapes.tokens = 150;
    shapes.head_dim = shapes.value_dim = c.head_dim;
    shapes.features = 128;
    HybridInputs in = random_inputs(shapes, at::kDouble, 77 + c.window);
    if (c.kind == HybridKind::kLolcats) in.log_gates = at::Tensor();
    // Row 1 is padding for its first 9 tokens, row 2 for a stretch mid-way (a finished sequence's steps).
    in.key_valid = at::ones({shapes.batch, shapes.tokens}, at::kBool);
    in.key_valid[1].narrow(0, 0, 9).fill_(false);
    in.key_valid[2].narrow(0, 60, 7).fill_(false);
    // Both sides read the same values: rounded to the device dtype first.
    for (at::Tensor* t : {&in.query_features, &in.key_features, &in.queries, &in.keys, &in.values})
      *t = t->to(c.dtype).to(at::kDouble);
    HybridAttentionConfig config;
    config.kind = c.kind;
    config.window = c.window;
    config.linear_keys = c.keys;
    config.window_scale = 0.7;
    const std::string where = "kind " + std::to_string(static_cast<int>(c.kind)) + " window " +
                              std::to_string(c.window) + " dtype " + std::string(c10::toString(c.dtype));
    auto on_device = [&](const at::Tensor& t) {
      return t.defined() ? t.to(at::kCUDA, t.is_floating_point() && t.dim() == 4 ? c.dtype : t.scalar_type())
                         : at::Tensor();
    };
    HybridDecodeState reference(config, shapes.batch, shapes.heads, shapes.features, shapes.head_dim, shapes.value_dim,
                                at::TensorOptions().dtype(at::kDouble));
    HybridDecodeState fused(config, shapes.batch, shapes.heads, shapes.features, shapes.head_dim, shapes.value_dim,
                            at::TensorOptions().device(at::kCUDA).dtype(c.dtype));
    const int64_t prompt = 20;
    HybridInputs head = in;
    for (at::Tensor* t : {&head.query_features, &head.key_features, &head.queries, &head.keys, &head.values})
      *t = t->narrow(2, 0, prompt);
    if (head.log_gates.defined()) head.log_gates = head.log_gates.narrow(2, 0, prompt);
    head.key_valid = in.key_valid.narrow(1, 0, prompt);
    reference.absorb(head);
    HybridInputs device_head = head;
    for (at::Tensor* t : {&device_head.query_features, &device_head.key_features, &device_head.queries,
                          &device_head.keys, &device_head.values, &device_head.log_gates, &device_head.key_valid})
      *t = on_device(*t);
    fused.absorb(device_head);
    const double tolerance = c.dtype == at::kFloat ? 2e-5 : 3e-2;
    for (int64_t t = prompt; t < shapes.tokens; ++t) {
      auto at_t = [t](const at::Tensor& x) { return x.defined() ? x.narrow(2, t, 1) : at::Tensor(); };
      const at::Tensor valid = in.key_valid.select(1, t);
      const at::Tensor expected =
          reference.step(at_t(in.query_features), at_t(in.key_features), at_t(in.queries), at_t(in.keys),
                         at_t(in.values), at_t(in.log_gates), in.sink_logits, in.window_logits, valid);
      const at::Tensor got =
          fused.step(on_device(at_t(in.query_features)), on_device(at_t(in.key_features)), on_device(at_t(in.queries)),
                     on_device(at_t(in.keys)), on_device(at_t(in.values)), on_device(at_t(in.log_gates)),
                     on_device(in.sink_logits), on_device(in.window_logits), on_device(valid));
      ASSERT_TRUE(fused.last_step_fused()) << where;
      EXPECT_LT(max_difference(got.to(at::kCPU, at::kDouble), expected),
                tolerance * std::max(1.0, expected.abs().max().item<double>()))
          << where << " token " << t;
    }
    EXPECT_EQ(fused.tokens(), shapes.tokens);
  }
}

}  // namespace
}  // namespace kvforge
