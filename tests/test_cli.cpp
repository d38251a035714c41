// The kvforge binary end to end: help, generate, inspect, and one clear line for bad input.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <sys/wait.h>

#include "runtime/json_file.h"
#include "tests/test_util.h"

namespace kvforge {
namespace {

using testing::fixture;
using testing::kvforge_binary;

using CommandRun = testing::CommandResult;

CommandRun run_kvforge(const std::string& arguments) { return testing::run_command(kvforge_binary() + " " + arguments); }

// Bad input: exit code 2 and exactly one line, starting "error: ", holding every fragment.
void expect_one_line_error(const CommandRun& run, std::initializer_list<const char*> fragments) {
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_EQ(run.output.rfind("error: ", 0), 0u) << run.output;
  EXPECT_EQ(std::count(run.output.begin(), run.output.end(), '\n'), 1) << run.output;
  for (const char* fragment : fragments) EXPECT_NE(run.output.find(fragment), std::string::npos) << run.output;
}

TEST(Cli, HelpListsSubcommands) {
  CommandRun run = run_kvforge("--help");
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_NE(run.output.find("generate"), std::string::npos);
  EXPECT_NE(run.output.find("inspect"), std::string::npos);
}

TEST(Cli, GenerateGreedyMatchesReferenceTokensAndReportsSpeed) {
  CommandRun run = run_kvforge("generate --model " + fixture("llama") + " --prompt 'Hello' --max-new-tokens 5 device=cpu");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("(5 tokens, finished by length)"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("tokens/s"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("time to first token"), std::string::npos) << run.output;
}

// The committed GPU base model finds a pass key on the CPU: loading, tokenizer, prefill over ~700
// tokens and cached decode all have to be right for the digits to come out.
TEST(Cli, CommittedBaseModelRetrievesThePassKey) {
  CommandRun run = run_kvforge("generate " + fixture("../../recipes/generate-passkey.yaml") + " device=cpu model=" +
                               fixture("../../models/small-base-gpu"));
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
  expect_one_line_error(run_kvforge("generate --model " + dir + "/missing --prompt hi"), {"missing", "model directory"});
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
  expect_one_line_error(run_kvforge("pretrain " + fixture("../../recipes/tiny-base.yaml") + " eval.lengths=[100] out=" +
                                    dir + "/never"),
                        {"eval.tasks/eval.lengths", "passkey", "minimum"});
  EXPECT_FALSE(std::filesystem::exists(dir + "/never/metrics.jsonl"));
}

}  // namespace
}  // namespace kvforge
