// The kvforge binary at its edges: values a new user mistypes, output paths that cannot be written, position limits,
// --resume with nothing to resume, and token ids or logits in and out for parity with another runtime. Each bad input
// is one line naming the flag or key (exit 2), found before any work, with nothing written.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/json_file.h"
#include "runtime/safetensors.h"
#include "runtime/tensor_io.h"
#include "tests/test_util.h"

namespace kvforge {
namespace {

using testing::expect_one_line_error;
using testing::fixture;
using testing::run_kvforge;

std::string tiny_model() { return fixture("../../models/tiny-base"); }

// Everything below `dir`, as relative paths, so a test can say that a refused command wrote nothing.
std::vector<std::string> files_under(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir))
    files.push_back(std::filesystem::relative(entry.path(), dir).string());
  std::sort(files.begin(), files.end());
  return files;
}

TEST(CliEdges, GenerateChecksTokenCountsAndPositionsBeforeAnyWork) {
  const std::string llama = " --model " + fixture("llama") + " --prompt Hello device=cpu";
  expect_one_line_error(run_kvforge("generate" + llama + " --max-new-tokens -3"),
                        {"max_new_tokens", "expected >= 1", "-3"});
  expect_one_line_error(run_kvforge("generate" + llama + " --max-new-tokens 0"), {"max_new_tokens", "got 0"});
  // 512 positions: the prompt's few tokens leave room for fewer than 2000 new ones, and the message says how many.
  expect_one_line_error(run_kvforge("generate" + llama + " --max-new-tokens 2000"),
                        {"max_new_tokens", "2000 new tokens", "512 positions", "config.json", "at most"});
  // A prompt longer than the model's context, on the 1024-position tiny model.
  expect_one_line_error(
      run_kvforge("generate --model " + tiny_model() + " --device cpu --prompt '" + std::string(3000, 'a') + "'"),
      {"prompts", "the prompt is 300", "1024 positions", "beyond_context=true"});
  // Linear RoPE scaling (factor 2 on 512) makes 1024 positions: 600 new tokens fit, 1100 do not.
  const std::string qwen = "generate --model " + fixture("qwen2") + " --ids 5,6,7 --print ids device=cpu";
  testing::CommandResult fits = run_kvforge(qwen + " --max-new-tokens 600");
  ASSERT_EQ(fits.exit_code, 0) << fits.output.substr(0, 2000);
  expect_one_line_error(run_kvforge(qwen + " --max-new-tokens 1100"),
                        {"max_new_tokens", "1024 positions", "linear RoPE scaling's factor 2"});
  // beyond_context=true runs past the limit on purpose (speed and memory studies).
  EXPECT_EQ(run_kvforge(qwen + " --max-new-tokens 1100 beyond_context=true").exit_code, 0);
  // Bad ids and a bad print mode.
  const std::string ids = "generate --model " + fixture("llama") + " device=cpu --print ids";
  expect_one_line_error(run_kvforge(ids + " --ids 1,x,3"), {"--ids", "'x'"});
  expect_one_line_error(run_kvforge(ids + " --ids 1,99999"), {"--ids", "99999", "vocabulary"});
  expect_one_line_error(run_kvforge(ids + " --ids 1,2 --prompt hi"), {"--ids", "not both"});
  expect_one_line_error(run_kvforge("generate --model " + fixture("llama") + " --ids 1 --print json"),
                        {"print", "text, ids or logits", "json"});
}

// Token ids in, JSON out: the logits and greedy ids equal the transformers reference of the fixture.
TEST(CliEdges, GeneratePrintsIdsAndLogitsAsJsonMatchingTransformers) {
  const SafetensorsFile reference = SafetensorsFile::open(fixture("llama/reference.safetensors"));
  auto ids_of = [&](const std::string& name) {
    const at::Tensor t = read_tensor(reference, name, at::TensorOptions()).reshape({-1}).contiguous();
    return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  };
  auto joined = [](const std::vector<int64_t>& ids) {
    std::string text;
    for (int64_t id : ids) text += (text.empty() ? "" : ",") + std::to_string(id);
    return text;
  };
  const std::string command = "generate --model " + fixture("llama") + " device=cpu --ids ";

  // ids: the greedy continuation of both reference prompts, as one batch.
  testing::CommandResult greedy = run_kvforge(command + joined(ids_of("prompt_a")) + " --ids " +
                                              joined(ids_of("prompt_b")) + " --max-new-tokens 16 --print ids");
  ASSERT_EQ(greedy.exit_code, 0) << greedy.output;
  const nlohmann::json generated = nlohmann::json::parse(greedy.output.substr(0, greedy.output.find('\n')));
  ASSERT_EQ(generated.at("sequences").size(), 2u);
  EXPECT_EQ(generated["sequences"][0].at("ids").get<std::vector<int64_t>>(), ids_of("greedy_a"));
  EXPECT_EQ(generated["sequences"][1].at("ids").get<std::vector<int64_t>>(), ids_of("greedy_b"));
  EXPECT_EQ(generated["sequences"][1].at("prompt_ids").get<std::vector<int64_t>>(), ids_of("prompt_b"));
  EXPECT_EQ(generated["sequences"][0].at("finish"), "length");

  // logits: the first reference row's logits at every position, within the fp32 parity bound (1e-4).
  const at::Tensor input_ids = read_tensor(reference, "input_ids", at::TensorOptions())[0].contiguous();
  const at::Tensor expected = read_tensor(reference, "logits", at::TensorOptions())[0];
  const std::vector<int64_t> row(input_ids.data_ptr<int64_t>(), input_ids.data_ptr<int64_t>() + input_ids.numel());
  testing::CommandResult logits = run_kvforge(command + joined(row) + " --print logits");
  ASSERT_EQ(logits.exit_code, 0) << logits.output.substr(0, 2000);
  const nlohmann::json printed = nlohmann::json::parse(logits.output);
  const auto rows = printed.at("sequences").at(0).at("logits").get<std::vector<std::vector<float>>>();
  ASSERT_EQ(static_cast<int64_t>(rows.size()), expected.size(0));
  double max_error = 0;
  for (int64_t t = 0; t < expected.size(0); ++t) {
    ASSERT_EQ(static_cast<int64_t>(rows[t].size()), expected.size(1));
    for (int64_t v = 0; v < expected.size(1); ++v)
      max_error = std::max(max_error, std::abs(rows[t][v] - expected[t][v].item<double>()));
  }
  EXPECT_LE(max_error, 1e-4);
  EXPECT_GT(expected.abs().max().item<double>(), 1e-2);  // real logits, not a vacuous comparison
}

// kvforge tokenize prints what Hugging Face `tokenizers` gives for the committed fixture strings (encodings.json was
// written by it), and decodes the ids back; a file's whole text encodes as the same text passed inline.
TEST(CliEdges, TokenizeMatchesTheTokenizersLibraryAndDecodesBack) {
  for (const char* folder : {"tokenizer-gpt2", "tokenizer-llama3", "tokenizer-llama2", "tokenizer-mistral"}) {
    const std::string tokenizer = fixture(std::string(folder) + "/tokenizer.json");
    std::vector<nlohmann::json> cases;
    std::string texts, decodes;  // one command for every text, one for every id list
    for (const nlohmann::json& entry : read_json_file(fixture(std::string(folder) + "/encodings.json"))) {
      const std::string text = entry.at("text");
      // Shell-safe strings only (the command line goes through sh); the tokenizer tests cover the rest in process.
      // No NUL (argv cannot hold it) and no leading '-' (it would read as an option).
      if (text.empty() || text.find_first_of("'\\\n\r\t") != std::string::npos ||
          text.find('\0') != std::string::npos || text[0] == '-')
        continue;
      cases.push_back(entry);
      texts += " --text '" + text + "'";
      std::string ids;
      for (int64_t id : entry.at("ids").get<std::vector<int64_t>>()) ids += (ids.empty() ? "" : ",") + std::to_string(id);
      decodes += " --decode " + ids;
    }
    ASSERT_GE(cases.size(), 5u) << folder;
    testing::CommandResult run = run_kvforge("tokenize --tokenizer " + tokenizer + texts);
    ASSERT_EQ(run.exit_code, 0) << run.output;
    testing::CommandResult back = run_kvforge("tokenize --tokenizer " + tokenizer + decodes);
    ASSERT_EQ(back.exit_code, 0) << back.output;
    const nlohmann::json encoded = nlohmann::json::parse(run.output), decoded = nlohmann::json::parse(back.output);
    ASSERT_EQ(encoded.size(), cases.size());
    ASSERT_EQ(decoded.size(), cases.size());
    for (size_t i = 0; i < cases.size(); ++i) {
      EXPECT_EQ(encoded[i].at("text"), cases[i].at("text"));
      EXPECT_EQ(encoded[i].at("ids"), cases[i].at("ids")) << folder << ": " << cases[i].at("text");
      EXPECT_EQ(decoded[i].at("text"), cases[i].at("decoded")) << folder << ": " << cases[i].at("text");
    }
  }
  const std::string dir = testing::make_temp_dir("cli-tokenize");
  testing::write_file(dir + "/text.txt", "The pass key is 71432.");
  testing::CommandResult both = run_kvforge("tokenize --model " + tiny_model() + " --file " + dir +
                                            "/text.txt --text 'The pass key is 71432.'");
  ASSERT_EQ(both.exit_code, 0) << both.output;
  const nlohmann::json printed = nlohmann::json::parse(both.output);
  ASSERT_EQ(printed.size(), 2u);
  EXPECT_EQ(printed[1].at("ids"), printed[0].at("ids"));
  EXPECT_EQ(printed[1].at("file"), dir + "/text.txt");
  expect_one_line_error(run_kvforge("tokenize --text hi"), {"--tokenizer", "--model"});
  expect_one_line_error(run_kvforge("tokenize --model " + tiny_model()), {"nothing to do"});
  expect_one_line_error(run_kvforge("tokenize --model " + tiny_model() + " --decode 1,999999"), {"--decode", "999999"});
  expect_one_line_error(run_kvforge("tokenize --model " + tiny_model() + " --file " + dir + "/missing.txt"),
                        {"missing.txt", "cannot open"});
}

TEST(CliEdges, OutputPathsThatCannotBeWrittenAreRefusedByName) {
  const std::string dir = testing::make_temp_dir("cli-out");
  testing::write_file(dir + "/a-file", "not a folder\n");
  // eval --out naming a file: refused before the model loads, not after the whole evaluation.
  expect_one_line_error(run_kvforge("eval --model " + tiny_model() +
                                    " --device cpu --tasks passkey --lengths 256 "
                                    "--samples 1 --out " +
                                    dir + "/a-file"),
                        {"--out", "a-file", "is a file; expected a folder"});
  expect_one_line_error(run_kvforge("eval --model " + tiny_model() +
                                    " --device cpu --tasks passkey --lengths 256 "
                                    "--samples 1 --out " +
                                    dir + "/a-file/report"),
                        {"--out", "cannot create folder", "is a file, not a folder"});
  // train out= naming a file.
  expect_one_line_error(run_kvforge("train " + fixture("../../recipes/prefixkv-tiny-cpu.yaml") +
                                    " model=" + tiny_model() + " out=" + dir + "/a-file"),
                        {"out", "a-file", "is a file; expected a folder"});
  // export --out naming a folder: no internal temporary name in the message, nothing left in the folder.
  std::filesystem::create_directories(dir + "/a-folder");
  expect_one_line_error(
      run_kvforge("export " + fixture("../../models/tiny-base/config.json") + " --out " + dir + "/a-folder"),
      {"--out", "a-folder", "is a folder; expected the path of the file to write"});
  expect_one_line_error(run_kvforge("export x.safetensors --out " + dir + "/missing/heads.tsv"),
                        {"--out", "does not exist"});
  EXPECT_EQ(files_under(dir), std::vector<std::string>({"a-file", "a-folder"}));
  // eval --samples and --batch-size with a negative value are refused, not replaced by the default.
  expect_one_line_error(run_kvforge("eval --model " + tiny_model() +
                                    " --device cpu --tasks passkey --lengths 256 "
                                    "--samples -3 --out " +
                                    dir + "/never"),
                        {"--samples", "expected >= 1"});
  expect_one_line_error(run_kvforge("eval --model " + tiny_model() +
                                    " --device cpu --tasks passkey --lengths 256 "
                                    "--batch-size -1 --out " +
                                    dir + "/never"),
                        {"--batch-size", "expected >= 1"});
  EXPECT_FALSE(std::filesystem::exists(dir + "/never"));
  // An unknown flag is bad input too: exit 2.
  EXPECT_EQ(run_kvforge("generate --no-such-flag").exit_code, 2);
}

// The tiny pretraining recipe at a debug size, a run that takes a second or two.
std::string debug_pretrain(const std::string& out) {
  return "pretrain " + fixture("../../recipes/tiny-base.yaml") +
         " model.hidden_size=32 model.intermediate_size=64 model.num_layers=2 model.num_heads=2 model.num_kv_heads=1"
         " data.max_tokens=270 train.batch_size=2 train.micro_batches=1 train.warmup_steps=1 eval.tasks=[]"
         " threads=1 device=cpu out=" +
         out;
}

TEST(CliEdges, PretrainRefusesBadStepsWithoutWritingAndResumeSaysWhereItStarts) {
  const std::string dir = testing::make_temp_dir("cli-pretrain");
  expect_one_line_error(run_kvforge(debug_pretrain(dir + "/bad") + " train.steps=-5"),
                        {"train.steps", "expected >= 1", "-5"});
  EXPECT_FALSE(std::filesystem::exists(dir + "/bad")) << "nothing written for a refused recipe";

  // --resume with no checkpoint yet says it starts fresh; a second --resume says where it resumes from.
  testing::CommandResult fresh = run_kvforge(debug_pretrain(dir + "/run") + " train.steps=2 --resume");
  ASSERT_EQ(fresh.exit_code, 0) << fresh.output;
  EXPECT_NE(fresh.output.find("--resume: no checkpoint in " + dir + "/run yet; starting from step 0"),
            std::string::npos)
      << fresh.output;
  testing::CommandResult again = run_kvforge(debug_pretrain(dir + "/run") + " train.steps=3 --resume");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("resumed from step 2 of 3 (" + dir + "/run/checkpoints/step-00000002)"),
            std::string::npos)
      << again.output;
  // One record per step in metrics.jsonl.
  std::istringstream lines(read_text_file(dir + "/run/metrics.jsonl"));
  std::vector<int64_t> steps;
  for (std::string line; std::getline(lines, line);) steps.push_back(nlohmann::json::parse(line).at("step"));
  EXPECT_EQ(steps, std::vector<int64_t>({0, 1, 2}));
}

}  // namespace
}  // namespace kvforge
