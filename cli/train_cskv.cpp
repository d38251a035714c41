#include "cli/train_cskv.h"

#include <torch/torch.h>

#include <chrono>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "checkpoints/artifact.h"
#include "cli/device_choice.h"
#include "cli/ranks.h"
#include "cli/trainer_recipe.h"
#include "eval/report.h"
#include "policies/cskv.h"
#include "runtime/file_system.h"
#include "runtime/input_error.h"
#include "runtime/model_loader.h"
#include "trainers/cskv/factorization.h"
#include "trainers/cskv/fit.h"
#include "trainers/cskv/reconstruction.h"

namespace kvforge {
namespace {

std::string fixed4(double value) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(4) << value;
  return out.str();
}

std::string errors_table(const at::Tensor& initial, const at::Tensor& trained, const std::vector<int64_t>& ranks) {
  std::vector<std::vector<std::string>> rows;
  for (int64_t l = 0; l < initial.size(0); ++l) {
    std::vector<std::string> row{std::to_string(l), std::to_string(ranks[0]) + " / " + std::to_string(ranks[1])};
    for (int64_t column : {0, 1, 2})
      for (const at::Tensor* errors : {&initial, &trained}) row.push_back(fixed4((*errors)[l][column].item<double>()));
    rows.push_back(row);
  }
  return eval::markdown_table({"layer", "rank K / V", "K error (init)", "K error (trained)", "V error (init)",
                               "V error (trained)", "score error (init)", "score error (trained)"},
                              rows, std::vector<bool>(8, true));
}

// Ranks from the densities, or from kv_ratio: the largest equal K and V ranks whose latents (codes and scales at
// quant.bits) take at most that fraction of the full cache's bytes.
std::pair<int64_t, int64_t> recipe_ranks(const Recipe& recipe, const ModelConfig& config, int64_t bits, int64_t group) {
  const int64_t multiple = bits < 16 ? 8 / bits : 1;
  const int64_t heads = config.num_kv_heads, limit = std::min(heads * config.head_dim, config.hidden_size);
  if (recipe.has("ranks.kv_ratio")) {
    const double ratio = recipe.get_double("ranks.kv_ratio");
    if (!(ratio > 0 && ratio <= 1)) fail_input("recipe", "ranks.kv_ratio", "expected a fraction in (0, 1]");
    for (int64_t width = config.head_dim / multiple * multiple; width >= multiple; width -= multiple) {
      const int64_t rank = std::min(width * heads, limit);
      if (cskv_kept_fraction(rank, rank, bits, group, heads, config.head_dim) <= ratio) return {rank, rank};
    }
    fail_input("recipe", "ranks.kv_ratio",
               "a fraction of " + fixed4(ratio) + " leaves no latent channel per KV head at " + std::to_string(bits) +
                   " bits");
  }
  auto rank = [&](const char* field) {
    const double density = recipe.get_double(field);
    const int64_t value = cskv::rank_for_density(density, config.head_dim, heads, multiple);
    if (!(density > 0) || value < heads)
      fail_input("recipe", field,
                 "density " + fixed4(density) + " leaves no latent channel per KV head (head_dim " +
                     std::to_string(config.head_dim) + (multiple > 1 ? ", whole bytes of codes" : "") + ")");
    return std::min(value, limit);
  };
  return {rank("ranks.key_density"), rank("ranks.value_density")};
}

}  // namespace

std::vector<RecipeKey> cskv_recipe_schema() {
  std::vector<RecipeKey> keys = {
      {"method", "cskv", "cskv"},
      {"model", "~", "Hugging Face model directory (config.json + safetensors + tokenizer.json)"},
      {"out", "runs/cskv", "output folder: cskv.safetensors, cskv-init.safetensors, errors.md, metrics.jsonl"},
      {"device", "auto", "auto | cpu | cuda | cuda:N"},
      {"dtype", "auto", "auto | float32 | bfloat16"},
      {"threads", "0", "CPU threads (0 = LibTorch's default)"},
      {"init", "asvd", "svd | asvd (activation-aware, CSKV's) | whiten (the closed-form optimum of the loss)"},
      {"asvd_alpha", "0.5", "asvd: input channels scaled by (mean |x|)^alpha (the reference: 0.5)"},
      {"ranks.key_density", "0.5", "latent channels per KV head as a share of head_dim (the reference: 0.25-0.5)"},
      {"ranks.value_density", "0.5", "same for values (the reference: 0.5-0.75)"},
      {"ranks.kv_ratio", "~", "instead of densities: latent bytes (codes + scales) as a fraction of the full cache's"},
      {"window", "32", "newest tokens kept exact beside the latents (the reference: 32)"},
      {"quant.bits", "16", "latent storage and quantization-aware training: 16 (none), 8, 4 or 2"},
      {"quant.group", "32", "tokens per key quantization group (per-channel scales)"},
      {"calibration.batches", "8", "batches for the asvd / whiten statistics"},
      {"train.key_loss", "mse", "mse (CSKV: keys after RoPE) | scores (errors of q·k under the batch's queries)"},
      {"eval.batches", "4", "held-out batches for the exported reconstruction error"},
  };
  CosineLoopDefaults loop;
  loop.lr_note = "AdamW peak (the reference: 5e-5 for one epoch over 7B-model text)";
  loop.min_lr_ratio = "0.0";
  for (const auto& group : {cosine_loop_keys("train", loop), data_recipe_keys("512", "1024")})
    keys.insert(keys.end(), group.begin(), group.end());
  return keys;
}

void run_cskv_recipe(const Recipe& recipe, bool resume) {
  cskv::FitOptions options;
  options.init = cskv::parse_init(recipe.get_string("init"));
  options.asvd_alpha = recipe.get_double("asvd_alpha");
  options.window = recipe.get_int("window");
  options.bits = recipe.get_int("quant.bits");
  options.group = recipe.get_int("quant.group");
  if (options.bits != 2 && options.bits != 4 && options.bits != 8 && options.bits != 16)
    fail_input("recipe", "quant.bits", "expected 16, 8, 4 or 2, got " + std::to_string(options.bits));
  if (options.window < 0) fail_input("recipe", "window", "expected >= 0");
  if (options.group < 1) fail_input("recipe", "quant.group", "expected >= 1");
  for (const char* key : {"train.batch_size", "train.micro_batches", "calibration.batches", "eval.batches"})
    if (recipe.get_int(key) < 1) fail_input("recipe", key, "expected >= 1");
  if (recipe.get_int("train.steps") < 0) fail_input("recipe", "train.steps", "expected >= 0");
  const std::string key_loss = recipe.get_string("train.key_loss");
  if (key_loss != "mse" && key_loss != "scores")
    fail_input("recipe", "train.key_loss", "expected mse or scores, got '" + key_loss + "'");
  const TaskMixture data = recipe_task_mixture(recipe);

  Ranks ranks = recipe_ranks(recipe);
  const at::Device device = ranks.device;
  const bool main_rank = ranks.is_main();
  LoadedModel loaded = load_frozen_model(recipe, device);
  const ModelConfig& config = loaded.config;
  std::tie(options.key_rank, options.value_rank) = recipe_ranks(recipe, config, options.bits, options.group);
  // Text: windows of the documents when files are named, else the task mixture; the seed picks the batches.
  const BatchSource batches = recipe_batches(recipe, loaded, data, recipe.get_int("train.batch_size"));

  const std::string out = recipe.get_string("out");
  const std::string recipe_text = recipe.to_yaml();
  if (main_rank) start_run_folder(recipe, out);
  if (main_rank)
    std::cerr << "cskv: " << cskv::init_name(options.init) << " factors of " << loaded.dir << " on " << device.str()
              << ", ranks K " << options.key_rank << " / V " << options.value_rank << " of "
              << config.num_kv_heads * config.head_dim << ", " << options.bits << "-bit latents, window "
              << options.window << std::endl;

  const auto started = std::chrono::steady_clock::now();
  const uint64_t calibration_seed = mix_seed({data.seed, 0xca1});
  const cskv::InputStatistics statistics = cskv::input_statistics(
      loaded.model, [&](int64_t i) { return batches(calibration_seed, i, 0); },
      options.init == cskv::Init::kSvd ? 0 : recipe.get_int("calibration.batches"),
      options.init == cskv::Init::kWhiten);
  std::vector<LowRankLayer> factors = cskv::initial_factors(loaded.model, options, statistics);
  const double init_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  cskv::ReconstructionConfig objective_config;
  objective_config.batches = batches;
  objective_config.seed = data.seed;
  objective_config.quantization = {options.bits, options.group, config.num_kv_heads};
  objective_config.score_loss = key_loss == "scores";
  cskv::ReconstructionObjective objective(loaded.model, factors, objective_config);
  const int64_t eval_batches = recipe.get_int("eval.batches");
  const at::Tensor initial_errors = objective.relative_errors(eval_batches);
  if (main_rank)
    write_artifact(out + "/cskv-init.safetensors",
                   cskv::cskv_artifact(factors, options, initial_errors, config, recipe_text,
                                       {{"steps", 0},
                                        {"calibration_tokens", static_cast<double>(statistics.tokens)},
                                        {"init_seconds", init_seconds}}));

  LoopConfig loop = cosine_loop(recipe, out, resume);
  const auto trained_from = std::chrono::steady_clock::now();
  if (loop.steps > 0) run_training(objective, loop, ranks.group());
  const double train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - trained_from).count();
  const at::Tensor errors = objective.relative_errors(eval_batches);
  if (!main_rank) return;

  const std::string path = out + "/cskv.safetensors";
  write_artifact(path, cskv::cskv_artifact(factors, options, errors, config, recipe_text,
                                           {{"steps", static_cast<double>(loop.steps)},
                                            {"calibration_tokens", static_cast<double>(statistics.tokens)},
                                            {"init_seconds", init_seconds},
                                            {"train_seconds", train_seconds},
                                            {"score_loss", objective_config.score_loss ? 1.0 : 0.0}}));
  const std::string table = errors_table(initial_errors, errors, {options.key_rank, options.value_rank});
  write_text_atomically(out + "/errors.md", std::string("Relative squared reconstruction error on held-out text (") +
                                                cskv::init_name(options.init) + " init, " + std::to_string(loop.steps) +
                                                " steps)\n\n" + table);
  std::cout << table << std::fixed << std::setprecision(2) << "kept fraction of KV bytes (latents): "
            << cskv_kept_fraction(options.key_rank, options.value_rank, options.bits, options.group,
                                  config.num_kv_heads, config.head_dim)
            << "\ninit " << init_seconds << " s, training " << train_seconds << " s\nartifact: " << path
            << " (initialisation: " << out << "/cskv-init.safetensors)\n";
}

}  // namespace kvforge
