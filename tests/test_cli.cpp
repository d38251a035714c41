// The kvforge binary end to end: help, generate, inspect, and one clear line for bad input.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "checkpoints/artifact.h"
#include "runtime/json_file.h"
#include "tests/test_util.h"

namespace kvforge {
namespace {

using testing::fixture;
using testing::kvforge_binary;

using testing::expect_one_line_error;
using testing::run_kvforge;

using CommandRun = testing::CommandResult;

TEST(Cli, HelpListsSubcommands) {
  CommandRun run = run_kvforge("--help");
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_NE(run.output.find("generate"), std::string::npos);
  EXPECT_NE(run.output.find("inspect"), std::string::npos);
}

TEST(Cli, GenerateGreedyMatchesReferenceTokensAndReportsSpeed) {
  CommandRun run =
      run_kvforge("generate --model " + fixture("llama") + " --prompt 'Hello' --max-new-tokens 5 device=cpu");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("(5 tokens, finished by length)"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("tokens/s"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("time to first token"), std::string::npos) << run.output;
}

// The committed GPU base model finds a pass key on the CPU: loading, tokenizer, prefill over ~700
// tokens and cached decode all have to be right for the digits to come out.
TEST(Cli, CommittedBaseModelRetrievesThePassKey) {
  CommandRun run = run_kvforge("generate " + fixture("../../recipes/generate-passkey.yaml") +
                               " device=cpu model=" + fixture("../../models/small-base-gpu"));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("The pass key is 59543."), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("finished by eos"), std::string::npos) << run.output;
}

TEST(Cli, InspectShowsConfigAndTensorTable) {
  CommandRun run = run_kvforge("inspect " + fixture("qwen2"));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("qwen2"), std::string::npos);
  EXPECT_NE(run.output.find("model.layers.1.self_attn.k_proj.bias"), std::string::npos);
  EXPECT_NE(run.output.find("tied embeddings"), std::string::npos);
  CommandRun file = run_kvforge("inspect " + fixture("llama/reference.safetensors"));
  ASSERT_EQ(file.exit_code, 0) << file.output;
  EXPECT_NE(file.output.find("greedy_a"), std::string::npos);
}

TEST(Cli, BadInputGivesOneClearLine) {
  const std::string dir = testing::make_temp_dir("cli");
  expect_one_line_error(run_kvforge("generate --model " + dir + "/missing --prompt hi"),
                        {"missing", "model directory"});
  expect_one_line_error(run_kvforge("inspect " + dir + "/nothing"), {"nothing", "no such file"});

  // Truncated safetensors.
  std::filesystem::create_directories(dir + "/cut");
  std::filesystem::copy_file(fixture("llama/config.json"), dir + "/cut/config.json");
  std::string bytes = read_text_file(fixture("llama/model.safetensors"));
  testing::write_file(dir + "/cut/model.safetensors", bytes.substr(0, bytes.size() / 2));
  expect_one_line_error(run_kvforge("inspect " + dir + "/cut"), {"model.safetensors", "data_offsets", "out of range"});
  expect_one_line_error(run_kvforge("generate --model " + dir + "/cut --prompt hi"), {"model.safetensors"});

  // Unsupported model type.
  std::filesystem::create_directories(dir + "/gpt2");
  testing::write_file(dir + "/gpt2/config.json", R"({"model_type": "gpt2", "vocab_size": 10})");
  expect_one_line_error(run_kvforge("inspect " + dir + "/gpt2"), {"config.json", "model_type", "gpt2"});

  // Unknown recipe key and malformed YAML.
  expect_one_line_error(run_kvforge("generate --model " + fixture("llama") + " --prompt hi sampling.temprature=1"),
                        {"sampling.temprature", "did you mean 'sampling.temperature'"});
  testing::write_file(dir + "/bad.yaml", "model: [\n");
  expect_one_line_error(run_kvforge("generate " + dir + "/bad.yaml"), {"bad.yaml", "malformed YAML"});
  expect_one_line_error(run_kvforge("generate --model " + fixture("llama") + " --prompt hi device=tpu"),
                        {"device", "tpu"});
  // An eval length below a task's minimal prompt is refused before any training, not after it.
  expect_one_line_error(
      run_kvforge("pretrain " + fixture("../../recipes/tiny-base.yaml") + " eval.lengths=[100] out=" + dir + "/never"),
      {"eval.tasks/eval.lengths", "passkey", "minimum"});
  EXPECT_FALSE(std::filesystem::exists(dir + "/never/metrics.jsonl"));
}

// kvforge eval end to end on the committed tiny model: policies side by side, the report files, and the
// numbers in report.json agreeing with what the policies promise.
TEST(Cli, EvalWritesAReportComparingPolicies) {
  const std::string out = testing::make_temp_dir("eval");
  CommandRun run = run_kvforge("eval --model " + fixture("../../models/tiny-base") +
                               " --policy streaming:budget=0.25 --policy snapkv:budget=0.5 --tasks passkey,arithmetic"
                               " --lengths 256 --samples 3 --device cpu --out " +
                               out);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  for (const char* file : {"report.md", "report.json", "accuracy_vs_kv.svg", "needle_heatmap-full.svg",
                           "needle_heatmap-snapkv_budget_0.5.svg"})
    EXPECT_TRUE(std::filesystem::exists(out + "/" + file)) << file;
  const nlohmann::json report = read_json_file(out + "/report.json");
  ASSERT_EQ(report.at("cells").size(), 6u);  // 3 policies × 2 tasks × 1 length
  for (const auto& cell : report.at("cells")) {
    EXPECT_EQ(cell.at("samples"), 3);
    const std::string policy = cell.at("policy");
    const double ratio = cell.at("kv_ratio");
    if (policy == "full") EXPECT_EQ(ratio, 1.0);
    // Measured bytes: a quarter / half of the prompt plus what the full cache reserves for the answer.
    if (policy == "streaming:budget=0.25") EXPECT_LT(ratio, 0.3);
    if (policy == "snapkv:budget=0.5") EXPECT_GT(ratio, 0.45);
    if (policy == "snapkv:budget=0.5") EXPECT_LT(ratio, 0.65);
    if (cell.at("task") == "passkey") EXPECT_FALSE(cell.at("by_depth").empty());
  }
  // The terminal gets the tables as plain text (report.md keeps the markdown).
  EXPECT_NE(run.output.find("\nfull "), std::string::npos) << run.output;
  EXPECT_EQ(run.output.find("| full"), std::string::npos) << run.output;
  EXPECT_EQ(run.output.find("###"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("report: " + out + "/report.md"), std::string::npos) << run.output;
}

TEST(Cli, EvalRefusesBadInputBeforeRunning) {
  const std::string dir = testing::make_temp_dir("eval-bad");
  const std::string model = " --model " + fixture("../../models/tiny-base") + " --device cpu --out " + dir + "/out";
  expect_one_line_error(run_kvforge("eval" + model + " --tasks passkey,needle --lengths 256"),
                        {"--tasks", "unknown task 'needle'", "niah_single"});
  expect_one_line_error(run_kvforge("eval" + model + " --tasks passkey --lengths 256,4096"),
                        {"--lengths", "4096", "context of 1024", "config.json"});
  expect_one_line_error(
      run_kvforge("eval" + model + " --tasks passkey --lengths 256 --policy snapkv:budget=0.2,wndow=4"),
      {"--policy", "wndow", "budget, window, kernel"});
  expect_one_line_error(run_kvforge("eval" + model + " --tasks passkey --lengths 256 --policy lru"),
                        {"unknown policy 'lru'", "streaming"});
  testing::write_file(dir + "/bad.jsonl", "{\"text\": \"fine\"}\n{\"txt\": 1}\n");
  expect_one_line_error(run_kvforge("eval" + model + " --perplexity " + dir + "/bad.jsonl"),
                        {"bad.jsonl", "line 2", "text"});
  EXPECT_FALSE(std::filesystem::exists(dir + "/out"));
}

TEST(Cli, EvalRefusesAnArtifactMadeForAnotherModel) {
  const std::string dir = testing::make_temp_dir("eval-artifact");
  Artifact artifact;
  artifact.method = "prefixkv";
  artifact.model = ModelFingerprint::of(ModelConfig::from_file(fixture("../../models/small-base-gpu/config.json")));
  artifact.metrics = {{"kv_ratio", 0.5}};
  artifact.tensors["layer_budgets"] = at::full({6}, 0.5);
  write_artifact(dir + "/budgets.safetensors", artifact);
  expect_one_line_error(run_kvforge("eval --model " + fixture("../../models/tiny-base") + " --device cpu --artifact " +
                                    dir + "/budgets.safetensors --tasks passkey --lengths 256"),
                        {"budgets.safetensors", "kvforge.model.layers", "made for another model", "6 here, 3 in"});
}

// train -> artifact -> eval: the recipe calibrates the tiny model, and eval reads the artifact's budgets.
TEST(Cli, TrainPrefixKvThenEvaluateItsArtifact) {
  const std::string dir = testing::make_temp_dir("train-prefixkv");
  CommandRun train = run_kvforge("train " + fixture("../../recipes/prefixkv-tiny-cpu.yaml") +
                                 " model=" + fixture("../../models/tiny-base") +
                                 " calibration.samples=3 calibration.length=400 out=" + dir + "/pk");
  ASSERT_EQ(train.exit_code, 0) << train.output;
  for (const char* file : {"prefixkv.safetensors", "budgets.md", "samples.jsonl", "recipe.yaml"})
    EXPECT_TRUE(std::filesystem::exists(dir + "/pk/" + file)) << file;
  const Artifact artifact = read_artifact(dir + "/pk/prefixkv.safetensors");
  EXPECT_EQ(artifact.method, "prefixkv");
  EXPECT_EQ(artifact.metrics.at("calibration_samples"), 3);
  EXPECT_EQ(artifact.tensors.at("retained_fraction").sizes(), (std::vector<int64_t>{3, 3}));

  CommandRun eval =
      run_kvforge("eval --model " + fixture("../../models/tiny-base") + " --device cpu --artifact " + dir +
                  "/pk/prefixkv.safetensors:budget=0.3 --policy uniform:budget=0.3 --tasks passkey"
                  " --lengths 256 --samples 2 --out " +
                  dir + "/eval");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  const nlohmann::json report = read_json_file(dir + "/eval/report.json");
  EXPECT_EQ(report.at("policies"), nlohmann::json({"full", "uniform:budget=0.3", "prefixkv:budget=0.3"}));
  for (const auto& cell : report.at("cells")) {
    EXPECT_GT(cell.at("answer_perplexity").get<double>(), 1.0);
    if (cell.at("policy") != "full") EXPECT_NEAR(cell.at("kv_ratio").get<double>(), 0.3, 0.06);
  }
  // PrefixKV's own files, one per budget named by the ratio evicted, read back through --artifact.
  CommandRun confs = run_kvforge("export " + dir +
                                 "/pk/prefixkv.safetensors --format prefixkv-json --name tiny --out " + dir + "/confs");
  ASSERT_EQ(confs.exit_code, 0) << confs.output;
  for (const char* ratio : {"0.8", "0.7", "0.5"})
    EXPECT_TRUE(std::filesystem::exists(dir + "/confs/prefixkv_tiny_" + ratio + ".json")) << ratio;
  CommandRun peer = run_kvforge("eval --model " + fixture("../../models/tiny-base") + " --device cpu --artifact " +
                                dir + "/confs/prefixkv_tiny_0.7.json --tasks passkey --lengths 256 --samples 2 --out " +
                                dir + "/eval-confs");
  ASSERT_EQ(peer.exit_code, 0) << peer.output;
  const nlohmann::json peer_report = read_json_file(dir + "/eval-confs/report.json");
  EXPECT_EQ(peer_report.at("policies"), nlohmann::json({"full", "prefixkv:budget=0.3"}));
  for (const auto& cell : peer_report.at("cells"))
    for (const auto& own : report.at("cells"))
      if (cell.at("policy") == "prefixkv:budget=0.3" && own.at("policy") == "prefixkv:budget=0.3")
        EXPECT_EQ(cell.at("kv_ratio"), own.at("kv_ratio")) << "the same budgets as the artifact they came from";

  expect_one_line_error(run_kvforge("train model=" + fixture("../../models/tiny-base")), {"method", "recipe"});
  expect_one_line_error(run_kvforge("train method=mamba"), {"method", "prefixkv", "'mamba'"});
  expect_one_line_error(run_kvforge("train method=prefixkv device=cpu budgets=[0.3,1.5] out=" + dir +
                                    "/bad model=" + fixture("../../models/tiny-base")),
                        {"budgets", "(0, 1]", "1.5"});
  expect_one_line_error(
      run_kvforge("train method=prefixkv device=cpu calibration.length=100 model=" + fixture("../../models/tiny-base")),
      {"calibration.length", "passkey", "minimum"});
  expect_one_line_error(run_kvforge("train method=prefixkv device=cpu calibraton.samples=2"),
                        {"calibraton.samples", "calibration.samples"});
  EXPECT_FALSE(std::filesystem::exists(dir + "/bad/prefixkv.safetensors"));
  expect_one_line_error(run_kvforge("eval --model " + fixture("../../models/tiny-base") + " --device cpu --artifact " +
                                    dir + "/pk/prefixkv.safetensors:budget=0.4 --tasks passkey --lengths 256"),
                        {"prefixkv.safetensors", "budget 0.4", "0.2, 0.3, 0.5"});
}

// RLKV end to end on the tiny model: train (and resume to the same gates), export the TSV, evaluate the artifact
// and the TSV; bad input is one line.
TEST(Cli, TrainRlkvResumeExportAndEvaluate) {
  const std::string dir = testing::make_temp_dir("train-rlkv");
  const std::string base = "train " + fixture("../../recipes/tiny-rlkv.yaml") +
                           " model=" + fixture("../../models/tiny-base") +
                           " rl.prompts=2 rl.group_size=2 rl.max_new_tokens=8 gates.train_recent=16";
  CommandRun straight = run_kvforge(base + " train.steps=3 out=" + dir + "/straight");
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  for (const char* file : {"rlkv.safetensors", "full_attention_heads.tsv", "gates.md", "metrics.jsonl", "recipe.yaml"})
    EXPECT_TRUE(std::filesystem::exists(dir + "/straight/" + file)) << file;
  ASSERT_EQ(run_kvforge(base + " train.steps=2 out=" + dir + "/resumed").exit_code, 0);
  CommandRun resumed = run_kvforge(base + " train.steps=3 out=" + dir + "/resumed --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  const Artifact a = read_artifact(dir + "/straight/rlkv.safetensors");
  const Artifact b = read_artifact(dir + "/resumed/rlkv.safetensors");
  EXPECT_EQ(a.method, "rlkv");
  EXPECT_EQ(a.tensors.at("gates").sizes(), (std::vector<int64_t>{3, 2}));
  EXPECT_TRUE(at::equal(a.tensors.at("gates"), b.tensors.at("gates")));
  EXPECT_EQ(a.metrics.at("deploy_sink"), 16);
  EXPECT_EQ(a.metrics.at("train_recent"), 16);

  CommandRun exported =
      run_kvforge("export " + dir + "/straight/rlkv.safetensors --format duo-tsv --out " + dir + "/heads.tsv");
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  // RLKV's own file name, the same np.savetxt rows.
  std::filesystem::create_directories(dir + "/rlkv-run");
  ASSERT_EQ(run_kvforge("export " + dir + "/straight/rlkv.safetensors --format rlkv-tsv --out " + dir +
                        "/rlkv-run/adapter_weights.tsv")
                .exit_code,
            0);
  EXPECT_EQ(testing::read_file(dir + "/rlkv-run/adapter_weights.tsv"), testing::read_file(dir + "/heads.tsv"));
  CommandRun eval = run_kvforge("eval --model " + fixture("../../models/tiny-base") + " --device cpu --artifact " +
                                dir + "/straight/rlkv.safetensors:sparsity=0.5 --artifact " + dir +
                                "/heads.tsv:sparsity=0.5 --policy heads:sparsity=0.5 --tasks passkey --lengths 256"
                                " --samples 2 --out " +
                                dir + "/eval");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  const nlohmann::json report = read_json_file(dir + "/eval/report.json");
  EXPECT_EQ(report.at("policies"),
            nlohmann::json({"full", "heads:sparsity=0.5", "rlkv:sparsity=0.5", "duo:sparsity=0.5"}));
  for (const auto& cell : report.at("cells"))
    if (cell.at("policy") != "full") EXPECT_LT(cell.at("kv_ratio").get<double>(), 0.8) << cell.at("policy");

  expect_one_line_error(run_kvforge(base + " objective=ppo out=" + dir + "/bad"), {"objective", "grpo or distill"});
  expect_one_line_error(run_kvforge(base + " data.task=needle out=" + dir + "/bad"), {"needle"});
  EXPECT_FALSE(std::filesystem::exists(dir + "/bad/rlkv.safetensors"));
  testing::write_file(dir + "/short.tsv", "1\t1\n");
  expect_one_line_error(run_kvforge("eval --model " + fixture("../../models/tiny-base") + " --device cpu --artifact " +
                                    dir + "/short.tsv --tasks passkey --lengths 256"),
                        {"short.tsv", "rows", "3"});
  Artifact wrong;
  wrong.method = "prefixkv";
  wrong.model = a.model;
  wrong.tensors["budgets"] = at::ones({1}, at::kDouble);
  write_artifact(dir + "/budgets.safetensors", wrong);
  expect_one_line_error(run_kvforge("export " + dir + "/budgets.safetensors --format duo-tsv"),
                        {"rlkv or duo", "prefixkv"});
  expect_one_line_error(run_kvforge("export " + dir + "/straight/rlkv.safetensors --format csv"),
                        {"--format", "duo-tsv, rlkv-tsv or prefixkv-json"});
  expect_one_line_error(run_kvforge("export " + dir + "/straight/rlkv.safetensors --format prefixkv-json"),
                        {"prefixkv artifact", "rlkv"});
}

TEST(Cli, TrainCskvResumeAndEvaluate) {
  const std::string dir = testing::make_temp_dir("train-cskv");
  const std::string base = "train " + fixture("../../recipes/cskv-tiny-cpu.yaml") +
                           " model=" + fixture("../../models/tiny-base") +
                           " data.min_tokens=128 data.max_tokens=160 train.batch_size=2 calibration.batches=2"
                           " eval.batches=2 quant.bits=4 ranks.kv_ratio=0.15";
  CommandRun straight = run_kvforge(base + " train.steps=4 out=" + dir + "/straight");
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  for (const char* file : {"cskv.safetensors", "cskv-init.safetensors", "errors.md", "metrics.jsonl", "recipe.yaml"})
    EXPECT_TRUE(std::filesystem::exists(dir + "/straight/" + file)) << file;
  ASSERT_EQ(run_kvforge(base + " train.steps=2 out=" + dir + "/resumed").exit_code, 0);
  CommandRun resumed = run_kvforge(base + " train.steps=4 out=" + dir + "/resumed --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  const Artifact a = read_artifact(dir + "/straight/cskv.safetensors");
  const Artifact b = read_artifact(dir + "/resumed/cskv.safetensors");
  EXPECT_EQ(a.method, "cskv");
  EXPECT_EQ(a.metrics.at("bits"), 4);
  EXPECT_EQ(a.tensors.at("ranks")[0][0].item<int64_t>(), 24);  // 4-bit codes + scales within 15%: 12 of 32 per head
  for (const auto& [name, tensor] : a.tensors) EXPECT_TRUE(at::allclose(tensor, b.tensors.at(name))) << name;

  CommandRun eval = run_kvforge(
      "eval --model " + fixture("../../models/tiny-base") + " --device cpu --artifact " + dir +
      "/straight/cskv.safetensors --artifact " + dir +
      "/straight/cskv-init.safetensors:bits=16 --tasks passkey --lengths 256 --samples 2 --out " + dir + "/eval");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  const nlohmann::json report = read_json_file(dir + "/eval/report.json");
  ASSERT_EQ(report.at("policies").size(), 3u) << report.at("policies");
  EXPECT_EQ(report.at("policies")[1], "cskv (asvd+train, 14% KV, 4-bit)");
  EXPECT_EQ(report.at("policies")[2], "cskv (asvd, 38% KV):bits=16");
  for (const auto& cell : report.at("cells"))
    if (cell.at("policy") != "full") EXPECT_LT(cell.at("kv_ratio").get<double>(), 0.6) << cell.at("policy");

  expect_one_line_error(run_kvforge(base + " init=pca out=" + dir + "/bad"), {"init", "svd, asvd or whiten"});
  expect_one_line_error(run_kvforge(base + " quant.bits=3 out=" + dir + "/bad"), {"quant.bits", "3"});
  expect_one_line_error(run_kvforge(base + " train.key_loss=kl out=" + dir + "/bad"),
                        {"train.key_loss", "mse or scores"});
  expect_one_line_error(run_kvforge(base + " ranks.kv_ratio=0.001 out=" + dir + "/bad"), {"ranks.kv_ratio", "4 bits"});
  EXPECT_FALSE(std::filesystem::exists(dir + "/bad/cskv.safetensors"));
}

TEST(Cli, TrainKvPredictionResumeAndEvaluate) {
  const std::string dir = testing::make_temp_dir("train-kvpred");
  const std::string base = "train " + fixture("../../recipes/kvpred-tiny-cpu.yaml") +
                           " model=" + fixture("../../models/tiny-base") +
                           " data.min_tokens=96 data.max_tokens=128 train.batch_size=2 calibration.batches=2"
                           " eval.batches=2";
  CommandRun straight = run_kvforge(base + " train.steps=4 out=" + dir + "/straight");
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  for (const char* file : {"kvpred.safetensors", "kvpred-init.safetensors", "losses.md", "flops.md", "metrics.jsonl"})
    EXPECT_TRUE(std::filesystem::exists(dir + "/straight/" + file)) << file;
  ASSERT_EQ(run_kvforge(base + " train.steps=2 out=" + dir + "/resumed").exit_code, 0);
  CommandRun resumed = run_kvforge(base + " train.steps=4 out=" + dir + "/resumed --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  const Artifact a = read_artifact(dir + "/straight/kvpred.safetensors");
  const Artifact b = read_artifact(dir + "/resumed/kvpred.safetensors");
  EXPECT_EQ(a.method, "kvpred");
  EXPECT_EQ(a.metrics.at("auxiliary_layers"), 2);
  EXPECT_TRUE(at::equal(a.tensors.at("layer_map"), at::tensor(std::vector<int64_t>{0, 0, 1})));
  for (const auto& [name, tensor] : a.tensors) EXPECT_TRUE(at::allclose(tensor, b.tensors.at(name))) << name;

  CommandRun eval =
      run_kvforge("eval --model " + fixture("../../models/tiny-base") + " --device cpu --artifact " + dir +
                  "/straight/kvpred.safetensors --tasks passkey --lengths 256 --samples 2 --out " + dir + "/eval");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  const nlohmann::json report = read_json_file(dir + "/eval/report.json");
  ASSERT_EQ(report.at("policies").size(), 3u) << report.at("policies");
  EXPECT_EQ(report.at("policies")[1], "kvpred (every 2nd layer, 4 steps)");
  EXPECT_EQ(report.at("policies")[2], "kvpred (every 2nd layer, 4 steps):alone=1");
  for (const auto& cell : report.at("cells")) {
    const double kv = cell.at("kv_ratio").get<double>();
    if (cell.at("policy") == "kvpred (every 2nd layer, 4 steps)") EXPECT_DOUBLE_EQ(kv, 1.0);  // the base's own cache
    if (cell.at("policy") == "kvpred (every 2nd layer, 4 steps):alone=1") EXPECT_NEAR(kv, 2.0 / 3, 0.01);
  }
  EXPECT_TRUE(std::filesystem::exists(dir + "/eval/accuracy_vs_ttft.svg"));

  expect_one_line_error(run_kvforge(base + " auxiliary.kind=distilled out=" + dir + "/bad"),
                        {"auxiliary.kind", "pruned or model"});
  expect_one_line_error(run_kvforge(base + " auxiliary.layer_map=[0,0,5] out=" + dir + "/bad"),
                        {"auxiliary.layer_map", "entry 2 is 5"});
  expect_one_line_error(run_kvforge(base + " auxiliary.kind=model out=" + dir + "/bad"), {"auxiliary.model"});
  expect_one_line_error(run_kvforge(base + " loss.consistency_layers=max out=" + dir + "/bad"),
                        {"loss.consistency_layers", "mean or sum"});
  EXPECT_FALSE(std::filesystem::exists(dir + "/bad/kvpred.safetensors"));
}

TEST(Cli, TrainLizardBothStagesAndEvaluate) {
  const std::string dir = testing::make_temp_dir("train-lizard");
  const std::string base = "train " + fixture("../../recipes/lizard-tiny-cpu.yaml") +
                           " model=" + fixture("../../models/tiny-base") +
                           " data.min_tokens=96 data.max_tokens=128 stage1.batch_size=2 stage2.batch_size=2"
                           " eval.batches=2 stage1.steps=6 stage2.steps=4";
  CommandRun trained = run_kvforge(base + " out=" + dir + "/lizard");
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  const Artifact artifact = read_artifact(dir + "/lizard/lizard.safetensors");
  EXPECT_EQ(artifact.method, "lizard");
  EXPECT_LT(artifact.metrics.at("transfer_loss_after"), artifact.metrics.at("transfer_loss_before"));
  EXPECT_LT(artifact.metrics.at("lm_loss_stage2"), artifact.metrics.at("lm_loss_stage1"));
  EXPECT_EQ(artifact.tensors.at("layers.0.query_map").sizes(), (std::vector<int64_t>{6, 32, 32}));
  EXPECT_EQ(artifact.tensors.at("layers.0.q_proj_lora_a").sizes(), (std::vector<int64_t>{8, 192}));
  EXPECT_EQ(artifact.tensors.count("layers.0.o_proj_lora_a"), 0u);
  CommandRun eval =
      run_kvforge("eval --model " + fixture("../../models/tiny-base") + " --device cpu --artifact " + dir +
                  "/lizard/lizard.safetensors --tasks passkey --lengths 256 --samples 2 --out " + dir + "/eval");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  const nlohmann::json report = read_json_file(dir + "/eval/report.json");
  ASSERT_EQ(report.at("policies").size(), 2u);
  EXPECT_EQ(report.at("policies")[1], "lizard (Lizard, window 32, 6 steps + 4 LoRA r8)");

  // Interrupted in stage 2 and resumed: stage 1 resumes from its last checkpoint (nothing left), stage 2 goes on.
  ASSERT_EQ(run_kvforge(base + " stage2.steps=2 out=" + dir + "/resumed").exit_code, 0);
  CommandRun resumed = run_kvforge(base + " out=" + dir + "/resumed --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  const Artifact continued = read_artifact(dir + "/resumed/lizard.safetensors");
  for (const auto& [name, tensor] : artifact.tensors)
    EXPECT_TRUE(at::allclose(tensor, continued.tensors.at(name), 1e-5, 1e-6)) << name;

  // Merged export: the same model with the adapters folded into q, k, v.
  CommandRun merged = run_kvforge(base + " export.merge_lora=true out=" + dir + "/merged");
  ASSERT_EQ(merged.exit_code, 0) << merged.output;
  const Artifact folded = read_artifact(dir + "/merged/lizard.safetensors");
  EXPECT_EQ(folded.tensors.count("layers.0.q_proj_lora_a"), 0u);
  EXPECT_EQ(folded.tensors.at("layers.0.q_proj_weight").sizes(), (std::vector<int64_t>{192, 192}));
  EXPECT_DOUBLE_EQ(folded.metrics.at("lm_loss_stage2"), artifact.metrics.at("lm_loss_stage2"));

  expect_one_line_error(run_kvforge(base + " attention.kind=mamba out=" + dir + "/bad"),
                        {"attention.kind", "lizard or lolcats"});
  expect_one_line_error(run_kvforge(base + " attention.kind=lolcats attention.linear_keys=all out=" + dir + "/bad"),
                        {"attention.linear_keys"});
  expect_one_line_error(run_kvforge(base + " lora.targets=[q,x] out=" + dir + "/bad"), {"lora.targets", "'x'"});
  expect_one_line_error(run_kvforge(base + " stage2.steps=0 export.merge_lora=true out=" + dir + "/bad"),
                        {"export.merge_lora"});
  EXPECT_FALSE(std::filesystem::exists(dir + "/bad/lizard.safetensors"));
}

// Two ranks over Gloo (as torchrun starts them: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) train the
// same artifact as one process with the same micro-batches per step, for each trainer on the shared loop; only rank 0
// writes.
// kvforge ARGUMENTS as ranks 0 and 1 of two on loopback, with the variables torchrun sets; each rank's output in
// LOGS-rank<r>.log. The exit code is the sum of both ranks'.
CommandRun run_two_ranks(const std::string& arguments, const std::string& logs) {
  const int port = testing::free_port();
  if (port <= 0) return {1, "no free port for the rendezvous"};
  auto rank = [&](int r) {
    return "RANK=" + std::to_string(r) + " LOCAL_RANK=" + std::to_string(r) +
           " WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " timeout 600 " +
           kvforge_binary() + " " + arguments + " > " + logs + "-rank" + std::to_string(r) + ".log 2>&1";
  };
  return testing::run_command("(" + rank(1) + " & " + rank(0) + "; a=$?; wait $!; b=$?; exit $((a + b)))");
}

// Qwen3 (per-head q/k norms, biases on q/k/v/o, a sliding-window layer): every trainer runs on the random-weight
// fixture, and eval takes every artifact beside every training-free policy.
TEST(Cli, EveryTrainerAndPolicyRunsOnQwen3) {
  const std::string dir = testing::make_temp_dir("qwen3");
  const std::string model = " model=" + fixture("qwen3");
  const std::string windows = " data.min_tokens=96 data.max_tokens=128 eval.batches=1";
  const std::vector<std::pair<std::string, std::string>> trainers = {
      {"lizard",
       "recipes/lizard-tiny-cpu.yaml stage1.batch_size=1 stage2.batch_size=1 stage1.steps=2 stage2.steps=2" + windows},
      {"cskv", "recipes/cskv-tiny-cpu.yaml train.batch_size=1 train.steps=2 calibration.batches=1" + windows},
      {"kvpred", "recipes/kvpred-tiny-cpu.yaml train.batch_size=1 train.steps=2 calibration.batches=1" + windows},
      {"rlkv", "recipes/tiny-rlkv.yaml rl.prompts=2 rl.group_size=2 rl.max_new_tokens=8 train.steps=2"},
      {"prefixkv", "recipes/prefixkv-tiny-cpu.yaml calibration.samples=2 calibration.length=400"},
  };
  std::string artifacts;
  for (const auto& [method, arguments] : trainers) {
    CommandRun train = run_kvforge("train " + fixture("../../" + arguments) + model + " out=" + dir + "/" + method);
    ASSERT_EQ(train.exit_code, 0) << method << ": " << train.output;
    const std::string artifact = dir + "/" + method + "/" + method + ".safetensors";
    ASSERT_TRUE(std::filesystem::exists(artifact)) << artifact;
    artifacts += " --artifact " + artifact;
  }
  const std::vector<std::string> free = {
      "streaming:budget=0.5", "snapkv:budget=0.5", "snapkv:budget=0.5,decode=1", "pyramidkv:budget=0.5",
      "h2o:budget=0.5",       "tova:budget=0.5",   "expected:budget=0.5",        "kivi:bits=2",
      "uniform:budget=0.5",   "heads:sparsity=0.5"};
  std::string policies;
  for (const std::string& policy : free) policies += " --policy " + policy;
  CommandRun eval = run_kvforge("eval --model " + fixture("qwen3") + " --device cpu" + policies + artifacts +
                                " --tasks passkey --lengths 256 --samples 1 --out " + dir + "/eval");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  const nlohmann::json report = read_json_file(dir + "/eval/report.json");
  std::set<std::string> measured;
  for (const auto& cell : report.at("cells")) measured.insert(cell.at("policy").get<std::string>());
  for (const std::string& policy : free) EXPECT_TRUE(measured.count(policy)) << policy;
  for (const auto& [method, arguments] : trainers) {
    const bool found = std::any_of(measured.begin(), measured.end(),
                                   [&](const std::string& label) { return label.rfind(method, 0) == 0; });
    EXPECT_TRUE(found) << method << " has no cell; measured " << report.at("policies");
  }
}

TEST(Cli, TrainersOnTwoRanksMatchOneProcess) {
  const std::string dir = testing::make_temp_dir("train-ranks");
  const std::string model = " model=" + fixture("../../models/tiny-base") + " threads=1";
  const std::string windows = " data.min_tokens=96 data.max_tokens=128 eval.batches=1";
  const std::vector<std::pair<std::string, std::string>> trainers = {
      {"lizard",
       "recipes/lizard-tiny-cpu.yaml stage1.batch_size=1 stage2.batch_size=1 stage1.micro_batches=2"
       " stage2.micro_batches=2 stage1.steps=3 stage2.steps=2" +
           windows},
      {"cskv",
       "recipes/cskv-tiny-cpu.yaml train.batch_size=1 train.micro_batches=2 train.steps=3 calibration.batches=1" +
           windows},
      {"kvpred",
       "recipes/kvpred-tiny-cpu.yaml train.batch_size=1 train.micro_batches=2 train.steps=3 calibration.batches=1" +
           windows},
      // Each rank samples its own micro-batch's rollouts; the reward summary still covers both.
      {"rlkv", "recipes/tiny-rlkv.yaml rl.prompts=2 rl.group_size=4 train.steps=3 train.micro_batches=2"},
      // Three prompts over two ranks: an uneven split, gathered back in order.
      {"prefixkv", "recipes/prefixkv-tiny-cpu.yaml calibration.samples=3 calibration.length=400"},
  };
  for (const auto& [method, arguments] : trainers) {
    const std::string recipe = "train " + fixture("../../" + arguments) + model;
    const std::string out = dir + "/" + method;
    CommandRun single = run_kvforge(recipe + " out=" + out + "-one");
    ASSERT_EQ(single.exit_code, 0) << single.output;
    CommandRun both = run_two_ranks(recipe + " out=" + out + "-two", out);
    ASSERT_EQ(both.exit_code, 0) << method << both.output << read_text_file(out + "-rank0.log")
                                 << read_text_file(out + "-rank1.log");
    const Artifact one = read_artifact(out + "-one/" + method + ".safetensors");
    const Artifact two = read_artifact(out + "-two/" + method + ".safetensors");
    ASSERT_EQ(one.tensors.size(), two.tensors.size()) << method;
    for (const auto& [name, tensor] : one.tensors)
      EXPECT_TRUE(at::allclose(tensor, two.tensors.at(name), 1e-4, 1e-6)) << method << " " << name;
    if (method == "rlkv") {  // some rollouts right, some wrong: the gates see a policy gradient, not only decay
      EXPECT_GT(one.metrics.at("reward_first"), 0.0);
      EXPECT_LT(one.metrics.at("reward_first"), 1.0);
    }
    for (const char* metric : {"reward_first", "reward_last", "loss_first", "loss_last"})
      if (one.metrics.count(metric) != 0)  // two ranks sum in another order: relative to the value
        EXPECT_NEAR(one.metrics.at(metric), two.metrics.at(metric), 1e-6 * std::max(1.0, std::abs(one.metrics.at(metric))))
            << metric;
    EXPECT_EQ(read_text_file(out + "-rank1.log").find("artifact:"), std::string::npos) << method;  // rank 1 is quiet
  }
  // Resumed with another world size: one process continues the two ranks' Lizard run to more stage-2 steps and ends
  // where one process running all of them ends (checkpoints do not depend on the ranks).
  const std::string lizard = "train " + fixture("../../" + trainers[0].second) + model;
  const std::string longer = " stage2.steps=4";
  ASSERT_EQ(run_kvforge(lizard + longer + " out=" + dir + "/lizard-straight").exit_code, 0);
  CommandRun resumed = run_kvforge(lizard + longer + " out=" + dir + "/lizard-two --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from step 2"), std::string::npos) << resumed.output;
  const Artifact straight = read_artifact(dir + "/lizard-straight/lizard.safetensors");
  const Artifact continued = read_artifact(dir + "/lizard-two/lizard.safetensors");
  for (const auto& [name, tensor] : straight.tensors)
    EXPECT_TRUE(at::allclose(tensor, continued.tensors.at(name), 1e-4, 1e-6)) << name;
}

// kvforge eval on two ranks: each runs its share of every cell's batches (and of the perplexity documents), and rank
// 0 writes one report whose accuracies, KV bytes and perplexities equal one process's.
TEST(Cli, EvalOnTwoRanksGathersOneReport) {
  const std::string dir = testing::make_temp_dir("eval-ranks");
  {
    std::ofstream documents(dir + "/documents.jsonl");
    for (int d = 0; d < 3; ++d)
      documents << "{\"text\": \"document " << d << ": the passkey is " << 1000 + 37 * d
                << ". Remember it, and the numbers around it.\"}\n";
  }
  const std::string arguments = "eval --model " + fixture("../../models/tiny-base") +
                                " --policy snapkv:budget=0.5 --tasks passkey,arithmetic --lengths 256 --samples 5"
                                " --batch-size 2 --device cpu --perplexity " +
                                dir + "/documents.jsonl --out ";
  CommandRun single = run_kvforge(arguments + dir + "/one");
  ASSERT_EQ(single.exit_code, 0) << single.output;
  CommandRun both = run_two_ranks(arguments + dir + "/two", dir + "/eval");
  ASSERT_EQ(both.exit_code, 0) << both.output << read_text_file(dir + "/eval-rank0.log")
                               << read_text_file(dir + "/eval-rank1.log");
  EXPECT_FALSE(std::filesystem::exists(dir + "/two-rank1"));
  EXPECT_EQ(read_text_file(dir + "/eval-rank1.log").find("report:"), std::string::npos);  // rank 1 writes nothing
  const nlohmann::json one = read_json_file(dir + "/one/report.json");
  const nlohmann::json two = read_json_file(dir + "/two/report.json");
  EXPECT_NE(two.at("device").get<std::string>().find("2 ranks"), std::string::npos) << two.at("device");
  ASSERT_EQ(one.at("cells").size(), two.at("cells").size());
  for (size_t c = 0; c < one.at("cells").size(); ++c) {
    const nlohmann::json& a = one.at("cells")[c];
    const nlohmann::json& b = two.at("cells")[c];
    for (const char* field : {"policy", "task", "samples", "answer_tokens"})
      EXPECT_EQ(a.at(field), b.at(field)) << field;
    for (const char* field : {"accuracy", "kv_bytes", "kv_ratio", "answer_perplexity"})
      EXPECT_DOUBLE_EQ(a.at(field).get<double>(), b.at(field).get<double>()) << field << " of cell " << c;
    EXPECT_EQ(a.at("by_depth"), b.at("by_depth"));
    EXPECT_GT(b.at("ttft_ms").get<double>(), 0.0);
  }
  ASSERT_EQ(one.at("perplexity").size(), 2u);  // full and snapkv
  for (size_t p = 0; p < one.at("perplexity").size(); ++p) {
    EXPECT_EQ(one.at("perplexity")[p].at("tokens"), two.at("perplexity")[p].at("tokens"));
    EXPECT_DOUBLE_EQ(one.at("perplexity")[p].at("perplexity").get<double>(),
                     two.at("perplexity")[p].at("perplexity").get<double>());
  }
}

// A rank that dies mid-run stops its peer with a clear error within the collective timeout (no hang), and one process
// resumes the run from the last checkpoint the two ranks wrote, ending where an uninterrupted one-process run ends.
TEST(Cli, DeadRankStopsTheOtherAndOneProcessResumes) {
  const std::string dir = testing::make_temp_dir("train-dead-rank");
  const std::string recipe = "train " + fixture("../../recipes/cskv-tiny-cpu.yaml") +
                             " model=" + fixture("../../models/tiny-base") +
                             " threads=1 data.min_tokens=96 data.max_tokens=128 eval.batches=1 train.batch_size=1"
                             " train.micro_batches=2 train.steps=60 train.checkpoint_every=1 calibration.batches=1";
  const int port = testing::free_port();
  ASSERT_GT(port, 0);
  auto rank = [&](int r) {
    return "KVFORGE_DIST_TIMEOUT_S=20 RANK=" + std::to_string(r) + " LOCAL_RANK=" + std::to_string(r) +
           " WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " " + kvforge_binary() + " " +
           recipe + " out=" + dir + "/run > " + dir + "/rank" + std::to_string(r) + ".log 2>&1";
  };
  // Rank 1 is killed once the pair has written its second checkpoint; rank 0's exit code and wait are reported.
  CommandRun killed = testing::run_command(
      rank(1) + " & dead=$!; " + rank(0) + " & survivor=$!; for i in $(seq 1200); do [ -d " + dir +
      "/run/checkpoints/step-00000002 ] && break; sleep 0.05; done; kill -9 $dead; start=$(date +%s); wait $survivor; "
      "code=$?; echo \"survivor exit $code after $(( $(date +%s) - start )) s\"");
  const std::string survivor_log = read_text_file(dir + "/rank0.log");
  int code = -1, seconds = -1;
  ASSERT_EQ(std::sscanf(killed.output.c_str(), "survivor exit %d after %d s", &code, &seconds), 2) << killed.output;
  EXPECT_NE(code, 0) << survivor_log;
  EXPECT_LE(seconds, 20 + 10) << "rank 0 waited past the collective timeout: " << survivor_log;
  EXPECT_NE(survivor_log.find("failed on rank 0 of 2"), std::string::npos) << survivor_log;
  EXPECT_FALSE(std::filesystem::exists(dir + "/run/cskv.safetensors"));  // no artifact from a broken run

  CommandRun resumed = run_kvforge(recipe + " out=" + dir + "/run --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from step"), std::string::npos) << resumed.output;
  ASSERT_EQ(run_kvforge(recipe + " out=" + dir + "/straight").exit_code, 0);
  const Artifact straight = read_artifact(dir + "/straight/cskv.safetensors");
  const Artifact continued = read_artifact(dir + "/run/cskv.safetensors");
  for (const auto& [name, tensor] : straight.tensors)
    EXPECT_TRUE(at::allclose(tensor, continued.tensors.at(name), 1e-4, 1e-6)) << name;
}

// Two torchrun launchers as two nodes of one process each (static rendezvous on loopback, node 0 hosting the store):
// the same Lizard artifact as one process with the same micro-batches.
TEST(Cli, TrainOnTwoNodesLaunchedByTorchrun) {
  const std::string python = fixture("../../.venv/bin/python");
  if (!std::filesystem::exists(python)) GTEST_SKIP() << "no .venv with torch's launcher (scripts/setup.sh makes one)";
  const std::string dir = testing::make_temp_dir("train-nodes");
  const std::string recipe = "train " + fixture("../../recipes/lizard-tiny-cpu.yaml") +
                             " model=" + fixture("../../models/tiny-base") +
                             " data.min_tokens=96 data.max_tokens=128 eval.batches=1 threads=1 stage1.batch_size=1"
                             " stage2.batch_size=1 stage1.micro_batches=2 stage2.micro_batches=2 stage1.steps=3"
                             " stage2.steps=2";
  CommandRun single = run_kvforge(recipe + " out=" + dir + "/one");
  ASSERT_EQ(single.exit_code, 0) << single.output;
  const int port = testing::free_port();
  ASSERT_GT(port, 0);
  auto node = [&](int rank) {
    return python + " -m torch.distributed.run --nnodes 2 --nproc-per-node 1 --node-rank " + std::to_string(rank) +
           " --master-addr 127.0.0.1 --master-port " + std::to_string(port) + " --no-python " + kvforge_binary() + " " +
           recipe + " out=" + dir + "/two > " + dir + "/node" + std::to_string(rank) + ".log 2>&1";
  };
  CommandRun both = testing::run_command("(" + node(1) + " & " + node(0) + "; a=$?; wait $!; b=$?; exit $((a + b)))");
  ASSERT_EQ(both.exit_code, 0) << both.output << read_text_file(dir + "/node0.log")
                               << read_text_file(dir + "/node1.log");
  const Artifact one = read_artifact(dir + "/one/lizard.safetensors");
  const Artifact two = read_artifact(dir + "/two/lizard.safetensors");
  for (const auto& [name, tensor] : one.tensors)
    EXPECT_TRUE(at::allclose(tensor, two.tensors.at(name), 1e-4, 1e-6)) << name;
  EXPECT_NE(read_text_file(dir + "/node0.log").find("artifact:"), std::string::npos);
  EXPECT_EQ(read_text_file(dir + "/node1.log").find("artifact:"), std::string::npos);  // only global rank 0 writes
}

}  // namespace
}  // namespace kvforge
