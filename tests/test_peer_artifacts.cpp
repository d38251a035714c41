// The peers' own artifact files (policies/peer_artifacts.h): read into the policies they stand for, written back.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "policies/heads.h"
#include "policies/peer_artifacts.h"
#include "policies/policy.h"
#include "policies/prefixkv.h"
#include "runtime/model_loader.h"
#include "tests/test_util.h"

namespace kvforge {
namespace {

// A model of `layers` layers and `kv_heads` KV heads (only the shape matters to these files).
ModelConfig shaped(int64_t layers, int64_t kv_heads) {
  return ModelConfig::from_json({{"model_type", "qwen3"},
                                 {"vocab_size", 64},
                                 {"hidden_size", 64},
                                 {"intermediate_size", 64},
                                 {"num_hidden_layers", layers},
                                 {"num_attention_heads", kv_heads * 2},
                                 {"num_key_value_heads", kv_heads},
                                 {"head_dim", 16}},
                                "config.json");
}

TEST(GatesTsv, RoundTripsAsNumpyWritesItAndRejectsTheWrongShape) {
  const ModelConfig& config = testing::tiny_base_model().config;  // 3 layers × 2 KV heads
  const std::string dir = testing::make_temp_dir("tsv");
  at::manual_seed(8);
  const at::Tensor gates = at::rand({3, 2}, at::kFloat) - 0.004;  // raw values may dip below 0
  testing::write_file(dir + "/heads.tsv", gates_to_tsv(gates));
  const Artifact read = read_peer_artifact(dir + "/heads.tsv", config);
  EXPECT_EQ(read.method, kDuoMethod);
  EXPECT_TRUE(at::allclose(read.tensors.at("gates"), gates, 0, 1e-7));
  EXPECT_EQ(gates_to_tsv(at::tensor({0.5, -0.25}).view({1, 2})),
            "5.000000000000000000e-01\t-2.500000000000000000e-01\n");  // np.savetxt's %.18e
  testing::write_file(dir + "/short.tsv", "1\t0\n0.5\t0.5\n");
  EXPECT_INPUT_ERROR(read_peer_artifact(dir + "/short.tsv", config), "short.tsv", "rows", "3");
  testing::write_file(dir + "/wide.tsv", "1\t0\t1\n0.5\t0.5\n1\t1\n");
  EXPECT_INPUT_ERROR(read_peer_artifact(dir + "/wide.tsv", config), "wide.tsv", "line 1", "2 gates");
  testing::write_file(dir + "/text.tsv", "1\tx\n0.5\t0.5\n1\t1\n");
  EXPECT_INPUT_ERROR(read_peer_artifact(dir + "/text.tsv", config), "line 1", "'x'");
}

TEST(GatesTsv, RlkvAdapterWeightsStreamTheLowestClippedGates) {
  // The first row of RLKV's published head_dist/rlkv/Qwen-3-4B-Thinking/.../adapter_weights.tsv (unclamped gates).
  const std::string row =
      "8.056640625000000000e-02\t-9.574890136718750000e-04\t2.285156250000000000e-01\t3.300781250000000000e-01\t"
      "-1.174926757812500000e-03\t-6.446838378906250000e-04\t4.042968750000000000e-01\t4.711914062500000000e-02\n";
  const std::string dir = testing::make_temp_dir("rlkv-tsv");
  testing::write_file(dir + "/adapter_weights.tsv", row);
  const ModelConfig config = shaped(1, 8);
  auto artifact = std::make_shared<const Artifact>(read_peer_artifact(dir + "/adapter_weights.tsv", config));
  EXPECT_EQ(artifact->method, kRlkvMethod);
  // RLKV clips to [0, 1] and streams the heads below the sparsity quantile: the three negative gates and 0.047.
  const auto streaming = streaming_heads_by_gate(artifact->tensors.at("gates"), 0.5);
  EXPECT_EQ(streaming[0], (std::vector<bool>{false, true, false, false, true, true, false, true}));
  const std::vector<PolicySpec> specs = policies_from_artifact(artifact, "sparsity=0.5");
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].parameters.at("sink"), 16);  // RLKV's bench window, the head policies' default
  EXPECT_EQ(specs[0].parameters.at("recent"), 64);
}

TEST(GatesTsv, DuoAttentionWindowComesFromTheConfigBesideIt) {
  const std::string dir = testing::make_temp_dir("duo-tsv");
  const ModelConfig config = shaped(2, 2);
  testing::write_file(dir + "/full_attention_heads.tsv", "1\t0\n0.25\t0.75\n");
  testing::write_file(dir + "/config.json", R"({"sink_size": 128, "recent_size": 256, "lr": 0.02})");
  auto artifact = std::make_shared<const Artifact>(read_peer_artifact(dir + "/full_attention_heads.tsv", config));
  EXPECT_EQ(artifact->method, kDuoMethod);
  const PolicySpec spec = policies_from_artifact(artifact, "sparsity=0.5")[0];
  EXPECT_EQ(spec.parameters.at("sink"), 128);
  EXPECT_EQ(spec.parameters.at("recent"), 256);
  EXPECT_EQ(policies_from_artifact(artifact, "sparsity=0.5,recent=32")[0].parameters.at("recent"), 32);
  testing::write_file(dir + "/config.json", R"({"sink_size": -1})");
  EXPECT_INPUT_ERROR(read_peer_artifact(dir + "/full_attention_heads.tsv", config), "config.json", "sink_size");
}

TEST(PrefixKvBudgetJson, ReadsEvictedFractionsAtTheFilesRatioAndWritesThemBack) {
  const std::string dir = testing::make_temp_dir("prefixkv-json");
  const ModelConfig config = shaped(4, 2);
  // Evicted per layer; the mean (0.4975) only approximates the ratio the file is named for, as in PrefixKV's confs.
  testing::write_file(dir + "/prefixkv_llava-v1.5-7b_0.5.json", "[0.0, 0.49, 0.6, 0.9]");
  auto artifact =
      std::make_shared<const Artifact>(read_peer_artifact(dir + "/prefixkv_llava-v1.5-7b_0.5.json", config));
  EXPECT_EQ(artifact->method, kPrefixKvMethod);
  EXPECT_EQ(prefixkv_budgets(*artifact), std::vector<double>{0.5});
  const std::vector<double> retained = prefixkv_layer_fractions(*artifact, 0.5);
  ASSERT_EQ(retained.size(), 4u);
  EXPECT_DOUBLE_EQ(retained[0], 1.0);
  EXPECT_NEAR(retained[3], 0.1, 1e-12);
  const std::vector<PolicySpec> specs = policies_from_artifact(artifact);
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].parameters.at("budget"), 0.5);
  // A name without a ratio: the budget is one minus the mean evicted fraction.
  testing::write_file(dir + "/budgets.json", "[0.5, 0.5, 0.25, 0.75]");
  EXPECT_EQ(prefixkv_budgets(read_peer_artifact(dir + "/budgets.json", config)), std::vector<double>{0.5});

  // Written back one file per calibrated budget, named by the ratio evicted, and read again to the same fractions.
  Artifact calibrated;
  calibrated.method = kPrefixKvMethod;
  calibrated.model = ModelFingerprint::of(config);
  calibrated.tensors["budgets"] = at::tensor(std::vector<double>{0.8, 0.3}, at::kDouble);
  calibrated.tensors["retained_fraction"] =
      at::tensor(std::vector<double>{1.0, 0.9, 0.7, 0.6, 0.5, 0.3, 0.2, 0.2}, at::kDouble).view({2, 4});
  const auto files = prefixkv_budget_files(calibrated, "m");
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].first, "prefixkv_m_0.2.json");
  EXPECT_EQ(files[1].first, "prefixkv_m_0.7.json");
  for (size_t k = 0; k < files.size(); ++k) {
    testing::write_file(dir + "/" + files[k].first, files[k].second);
    const Artifact back = read_peer_artifact(dir + "/" + files[k].first, config);
    const double budget = k == 0 ? 0.8 : 0.3;
    EXPECT_NEAR(prefixkv_budgets(back)[0], budget, 1e-12);
    const std::vector<double> expected = prefixkv_layer_fractions(calibrated, budget);
    const std::vector<double> got = prefixkv_layer_fractions(back, prefixkv_budgets(back)[0]);
    for (size_t layer = 0; layer < expected.size(); ++layer) EXPECT_NEAR(got[layer], expected[layer], 1e-12);
  }

  testing::write_file(dir + "/short.json", "[0.5, 0.5]");
  EXPECT_INPUT_ERROR(read_peer_artifact(dir + "/short.json", config), "short.json", "4 evicted fractions");
  testing::write_file(dir + "/whole.json", "[0.5, 1.0, 0.5, 0.5]");
  EXPECT_INPUT_ERROR(read_peer_artifact(dir + "/whole.json", config), "whole.json", "[1]", "[0, 1)");
  testing::write_file(dir + "/object.json", R"({"ratios": [0.5]})");
  EXPECT_INPUT_ERROR(read_peer_artifact(dir + "/object.json", config), "object.json", "list");
}

}  // namespace
}  // namespace kvforge
