#include "cli/train_prefixkv.h"

#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "cli/ranks.h"
#include "cli/trainer_recipe.h"
#include "eval/report.h"
#include "eval/tasks/documents.h"
#include "eval/tasks/tokenized_samples.h"
#include "runtime/file_system.h"
#include "runtime/input_error.h"
#include "runtime/model_loader.h"
#include "trainers/prefixkv/calibrate.h"

namespace kvforge {
namespace {

// Calibration prompts: synthetic task samples (a seed apart from eval's default, so calibration never sees the
// evaluated prompts) and/or documents read from files, each cut to `length` tokens.
std::vector<std::vector<int64_t>> calibration_prompts(const Recipe& recipe, const LoadedModel& model) {
  if (!model.tokenizer) fail_input(model.dir, "tokenizer.json", "missing; calibration needs the model's tokenizer");
  const Tokenizer& tokenizer = *model.tokenizer;
  const int64_t length = recipe.get_int("calibration.length");
  const int64_t samples = recipe.get_int("calibration.samples");
  if (length < 8 || length > model.config.max_position_embeddings)
    fail_input("recipe", "calibration.length",
               "expected 8.." + std::to_string(model.config.max_position_embeddings) + " tokens (the model's context)");
  if (samples < 1) fail_input("recipe", "calibration.samples", "expected >= 1");
  std::vector<std::vector<int64_t>> prompts;
  const std::vector<std::string> tasks = recipe.get_string_list("calibration.tasks");
  for (size_t t = 0; t < tasks.size(); ++t) {
    // Samples spread over the tasks in turn; the first tasks take the remainder.
    const auto count = samples / static_cast<int64_t>(tasks.size()) +
                       (static_cast<int64_t>(t) < samples % static_cast<int64_t>(tasks.size()) ? 1 : 0);
    if (count == 0) continue;
    std::vector<tasks::Sample> drawn;
    try {
      drawn = tasks::draw_samples(tokenizer, tasks[t], length, count,
                                 static_cast<uint64_t>(recipe.get_int("calibration.seed")),
                                 recipe.get_int("calibration.arithmetic_steps"));
    } catch (const std::invalid_argument& error) {  // unknown task, or a length below the task's minimum
      fail_input("recipe", "calibration.length", error.what());
    }
    for (const tasks::Sample& sample : drawn) prompts.push_back(tokenizer.encode(sample.prompt, true));
  }
  for (const std::string& path : recipe.get_string_list("calibration.files")) {
    for (const std::string& document : tasks::read_documents(path)) {
      std::vector<int64_t> tokens = tokenizer.encode(document, true);
      if (static_cast<int64_t>(tokens.size()) > length) tokens.resize(length);
      prompts.push_back(std::move(tokens));
    }
  }
  if (prompts.empty()) fail_input("recipe", "calibration.tasks", "no calibration prompts: name tasks or files");
  return prompts;
}

std::string fixed3(double value) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(3) << value;
  return out.str();
}

std::string budgets_table(const prefixkv::Calibration& calibration) {
  std::vector<std::string> header{"layer"};
  for (double budget : calibration.budgets) header.push_back(fixed3(budget));
  std::vector<std::vector<std::string>> rows;
  for (size_t layer = 0; layer < calibration.retained.front().size(); ++layer) {
    std::vector<std::string> row{std::to_string(layer)};
    for (size_t k = 0; k < calibration.budgets.size(); ++k)
      row.push_back(fixed3(calibration.retained[k][layer]) + " ± " + fixed3(calibration.retained_spread[k][layer]));
    rows.push_back(row);
  }
  return eval::markdown_table(header, rows, std::vector<bool>(header.size(), true));
}

}  // namespace

std::vector<RecipeKey> prefixkv_recipe_schema() {
  return {
      {"method", "prefixkv", "prefixkv"},
      {"model", "~", "Hugging Face model directory (config.json + safetensors + tokenizer.json)"},
      {"out", "runs/prefixkv", "output folder: prefixkv.safetensors, budgets.md, samples.jsonl, recipe.yaml"},
      {"device", "auto", "auto | cpu | cuda | cuda:N"},
      {"dtype", "auto", "auto | float32 | bfloat16 | float16"},
      {"threads", "0", "CPU threads (0 = LibTorch's default)"},
      {"budgets", "[0.2, 0.3, 0.5]", "retained KV fractions to calibrate for (the paper's x-axis; 1 - its --ratio)"},
      {"sink_tokens", "4", "first tokens never evicted (with the last token)"},
      {"calibration.tasks", "[passkey, niah_single, arithmetic]", "synthetic tasks to draw prompts from"},
      {"calibration.files", "[]", "text or JSONL documents to calibrate on too (cut to calibration.length)"},
      {"calibration.samples", "8", "synthetic prompts, spread over the tasks (the paper: one is nearly enough)"},
      {"calibration.length", "1024", "prompt length in the model's tokens"},
      {"calibration.seed", "7", "sample seed (eval's default is 1234, so calibration and eval prompts differ)"},
      {"calibration.arithmetic_steps", "2", "operations per arithmetic problem"},
  };
}

void run_prefixkv_recipe(const Recipe& recipe, bool) {
  prefixkv::CalibrationOptions options;
  options.budgets = recipe.get_double_list("budgets");
  options.sink_tokens = recipe.get_int("sink_tokens");
  prefixkv::check_options(options);  // before the model loads or anything is written
  Ranks ranks = recipe_ranks(recipe);
  const at::Device device = ranks.device;
  LoadedModel loaded = load_frozen_model(recipe, device);
  const std::vector<std::vector<int64_t>> prompts = calibration_prompts(recipe, loaded);

  const std::string out = recipe.get_string("out");
  const std::string recipe_text = recipe.to_yaml();
  const bool main_rank = ranks.is_main();
  if (main_rank) {
    start_run_folder(recipe, out);
    std::cerr << "prefixkv: calibrating " << loaded.dir << " on " << device.str() << " with " << prompts.size()
              << " prompt(s) for budget(s)";
    for (double budget : options.budgets) std::cerr << " " << budget;
    std::cerr << " on " << ranks.parallel.world_size() << " rank(s)" << std::endl;
  }
  const prefixkv::Calibration calibration = prefixkv::calibrate(
      loaded.model, prompts, options,
      [main_rank](size_t done, size_t total, const prefixkv::SampleResult& s) {
        if (main_rank) std::cerr << "  sample " << done << "/" << total << ": " << s.tokens << " tokens" << std::endl;
      },
      ranks.group());
  if (!main_rank) return;

  std::ostringstream samples;  // one line per sample, as the reference logs them before averaging
  for (const prefixkv::SampleResult& sample : calibration.samples)
    samples << nlohmann::json{{"tokens", sample.tokens},
                              {"thresholds", sample.thresholds},
                              {"retained", sample.retained}}
                   .dump()
            << "\n";
  write_text_atomically(out + "/samples.jsonl", samples.str());
  const std::string table = budgets_table(calibration);
  write_text_atomically(out + "/budgets.md", "Retained fraction per layer (mean ± spread over " +
                                                 std::to_string(calibration.samples.size()) + " samples)\n\n" + table);
  const std::string artifact_path = out + "/prefixkv.safetensors";
  write_artifact(artifact_path, prefixkv::calibration_artifact(calibration, options, loaded.config, recipe_text));
  std::cout << table << std::fixed << std::setprecision(2) << "calibrated in " << calibration.seconds
            << " s\nartifact: " << artifact_path << "\n";
}

}  // namespace kvforge
