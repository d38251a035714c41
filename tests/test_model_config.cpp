#include <gtest/gtest.h>

#include "runtime/model_config.h"
#include "runtime/rope.h"
#include "tests/test_util.h"

namespace kvforge {
namespace {

using nlohmann::json;
using testing::fixture;

json minimal_llama() {
  return {{"model_type", "llama"}, {"vocab_size", 100}, {"hidden_size", 32}, {"intermediate_size", 64},
          {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2}};
}

TEST(ModelConfig, ReadsTransformers5Fixtures) {
  ModelConfig llama = ModelConfig::from_file(fixture("llama/config.json"));
  EXPECT_EQ(llama.family, ModelFamily::kLlama);
  EXPECT_EQ(llama.head_dim, 16);
  EXPECT_EQ(llama.rope.type, RopeType::kLlama3);
  EXPECT_DOUBLE_EQ(llama.rope.factor, 8.0);
  EXPECT_EQ(llama.rope.original_max_position_embeddings, 64);
  EXPECT_FALSE(llama.qkv_bias);

  ModelConfig qwen = ModelConfig::from_file(fixture("qwen2/config.json"));
  EXPECT_TRUE(qwen.qkv_bias);
  EXPECT_FALSE(qwen.o_bias);
  EXPECT_TRUE(qwen.tie_word_embeddings);
  EXPECT_EQ(qwen.rope.type, RopeType::kLinear);
  EXPECT_DOUBLE_EQ(qwen.rope.theta, 1e6);
  EXPECT_EQ(qwen.sliding_window, std::vector<int64_t>({0, 0}));

  ModelConfig qwen3 = ModelConfig::from_file(fixture("qwen3/config.json"));
  EXPECT_EQ(qwen3.family, ModelFamily::kQwen3);
  EXPECT_TRUE(qwen3.qk_norm);
  EXPECT_TRUE(qwen3.qkv_bias);  // attention_bias: true puts a bias on q/k/v and o alike
  EXPECT_TRUE(qwen3.o_bias);
  EXPECT_FALSE(qwen3.mlp_bias);
  EXPECT_EQ(qwen3.head_dim, 32);                                  // explicit, not hidden / heads = 16
  EXPECT_EQ(qwen3.sliding_window, std::vector<int64_t>({0, 8}));  // from layer_types

  ModelConfig mistral = ModelConfig::from_file(fixture("mistral/config.json"));
  EXPECT_EQ(mistral.head_dim, 32);  // explicit, not hidden / heads = 16
  EXPECT_EQ(mistral.sliding_window, std::vector<int64_t>({8, 8}));
  EXPECT_EQ(mistral.eos_token_ids, std::vector<int64_t>({2}));
}

TEST(ModelConfig, ReadsClassicRopeScaling) {
  json config = minimal_llama();
  config["rope_theta"] = 500000.0;
  config["rope_scaling"] = {{"type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  config["eos_token_id"] = {128001, 128008};
  config["vocab_size"] = 128256;
  ModelConfig parsed = ModelConfig::from_json(config, "config.json");
  EXPECT_EQ(parsed.rope.type, RopeType::kLlama3);
  EXPECT_DOUBLE_EQ(parsed.rope.theta, 500000.0);
  EXPECT_EQ(parsed.rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(parsed.eos_token_ids, std::vector<int64_t>({128001, 128008}));
}

TEST(ModelConfig, Qwen2SlidingWindowFollowsMaxWindowLayers) {
  json config = minimal_llama();
  config["model_type"] = "qwen2";
  config["num_hidden_layers"] = 4;
  config["sliding_window"] = 16;
  config["use_sliding_window"] = true;
  config["max_window_layers"] = 2;
  EXPECT_EQ(ModelConfig::from_json(config, "c").sliding_window, std::vector<int64_t>({0, 0, 16, 16}));
  config["use_sliding_window"] = false;
  EXPECT_EQ(ModelConfig::from_json(config, "c").sliding_window, std::vector<int64_t>({0, 0, 0, 0}));
}

TEST(ModelConfig, Qwen3DefaultsAndWindowRuleWithoutLayerTypes) {
  json config = minimal_llama();
  config["model_type"] = "qwen3";
  config["num_hidden_layers"] = 4;
  ModelConfig plain = ModelConfig::from_json(config, "config.json");
  EXPECT_TRUE(plain.qk_norm);
  EXPECT_FALSE(plain.qkv_bias);  // attention_bias defaults to false, unlike qwen2's fixed q/k/v biases
  EXPECT_FALSE(plain.o_bias);
  EXPECT_EQ(plain.sliding_window, std::vector<int64_t>({0, 0, 0, 0}));
  config["sliding_window"] = 16;
  config["max_window_layers"] = 3;
  EXPECT_EQ(ModelConfig::from_json(config, "config.json").sliding_window, std::vector<int64_t>({0, 0, 0, 0}))
      << "sliding_window is ignored without use_sliding_window, as transformers does";
  config["use_sliding_window"] = true;
  const ModelConfig windowed = ModelConfig::from_json(config, "config.json");
  EXPECT_EQ(windowed.sliding_window, std::vector<int64_t>({0, 0, 0, 16}));
  EXPECT_EQ(to_json(windowed)["architectures"][0], "Qwen3ForCausalLM");
  const ModelConfig written = ModelConfig::from_json(to_json(windowed), "written");
  EXPECT_TRUE(written.qk_norm);
  EXPECT_EQ(written.sliding_window, windowed.sliding_window) << "what kvforge writes keeps each layer's window";
}

TEST(ModelConfig, BadInputNamesFileAndField) {
  json config = minimal_llama();
  config.erase("hidden_size");
  EXPECT_INPUT_ERROR(ModelConfig::from_json(config, "dir/config.json"), "dir/config.json", "hidden_size", "missing");

  config = minimal_llama();
  config["model_type"] = "gpt2";
  EXPECT_INPUT_ERROR(ModelConfig::from_json(config, "c.json"), "model_type", "gpt2", "llama, qwen2, qwen3, mistral");

  config = minimal_llama();
  config["num_key_value_heads"] = 3;
  EXPECT_INPUT_ERROR(ModelConfig::from_json(config, "c.json"), "num_key_value_heads", "divisor");

  config = minimal_llama();
  config["num_hidden_layers"] = "two";
  EXPECT_INPUT_ERROR(ModelConfig::from_json(config, "c.json"), "num_hidden_layers", "integer");

  config = minimal_llama();
  config["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 10000.0}, {"factor", 4.0}};
  EXPECT_INPUT_ERROR(ModelConfig::from_json(config, "c.json"), "rope_parameters.rope_type", "yarn");

  config = minimal_llama();
  config["rope_scaling"] = {{"type", "llama3"}, {"factor", 8.0}};
  EXPECT_INPUT_ERROR(ModelConfig::from_json(config, "c.json"), "rope_scaling.low_freq_factor", "missing");

  EXPECT_INPUT_ERROR(ModelConfig::from_json(json::array(), "c.json"), "c.json", "object");

  const std::string dir = testing::make_temp_dir("config");
  testing::write_file(dir + "/config.json", "{\"model_type\": \"llama\",");
  EXPECT_INPUT_ERROR(ModelConfig::from_file(dir + "/config.json"), "config.json", "malformed JSON");
  EXPECT_INPUT_ERROR(ModelConfig::from_file(dir + "/absent.json"), "absent.json", "cannot open");
}

TEST(Rope, Llama3ScalingKeepsHighAndSlowsLowFrequencies) {
  RopeConfig plain;
  plain.theta = 10000.0;
  RopeConfig scaled = plain;
  scaled.type = RopeType::kLlama3;
  scaled.factor = 8.0;
  scaled.original_max_position_embeddings = 64;
  at::Tensor base = rope_inverse_frequencies(plain, 16), llama3 = rope_inverse_frequencies(scaled, 16);
  // wavelengths 2π/f: index 0 (6.3) is below 64/4 and kept; index 7 (~20000) above 64 and divided by 8;
  // index 2 (62.8) lies in the band and is interpolated strictly between.
  EXPECT_FLOAT_EQ(llama3[0].item<float>(), base[0].item<float>());
  EXPECT_FLOAT_EQ(llama3[7].item<float>(), base[7].item<float>() / 8.0f);
  EXPECT_LT(llama3[2].item<float>(), base[2].item<float>());
  EXPECT_GT(llama3[2].item<float>(), base[2].item<float>() / 8.0f);
}

}  // namespace
}  // namespace kvforge
