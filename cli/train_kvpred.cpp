#include "cli/train_kvpred.h"

#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "cli/device_choice.h"
#include "cli/ranks.h"
#include "cli/trainer_recipe.h"
#include "eval/report.h"
#include "runtime/file_system.h"
#include "runtime/input_error.h"
#include "runtime/model_flops.h"
#include "runtime/model_loader.h"
#include "trainers/kvpred/artifact.h"
#include "trainers/kvpred/auxiliary.h"
#include "trainers/kvpred/objective.h"

namespace kvforge {
namespace {

std::string fixed(double value, int decimals) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(decimals) << value;
  return out.str();
}

// Prefill FLOPs of the base against KV Prediction's, per prompt length.
std::string flops_table(const ModelConfig& base, const ModelConfig& auxiliary, const std::vector<int64_t>& lengths) {
  std::vector<std::vector<std::string>> rows;
  for (int64_t length : lengths) {
    const double full = forward_flops(base, length, 0, 1);
    const double predicted = kv_prediction_prefill_flops(base, auxiliary, length);
    const double alone = forward_flops(auxiliary, length, 0, 1);
    rows.push_back({std::to_string(length), fixed(full / 1e9, 2), fixed(predicted / 1e9, 2),
                    fixed(full / predicted, 2) + "x", fixed(full / alone, 2) + "x"});
  }
  return eval::markdown_table(
      {"prompt tokens", "base GFLOPs", "KV Prediction GFLOPs", "fewer FLOPs", "auxiliary alone: fewer FLOPs"}, rows,
      std::vector<bool>(5, true));
}

std::string losses_table(const kvpred::HeldOutLosses& initial, const kvpred::HeldOutLosses& trained) {
  auto row = [&](const std::string& name, double kvpred::HeldOutLosses::*field) {
    return std::vector<std::string>{name, fixed(initial.*field, 4), fixed(trained.*field, 4)};
  };
  return eval::markdown_table({"held-out (per token)", "initialisation", "trained"},
                              {row("base CE on its own KV (the target)", &kvpred::HeldOutLosses::base_ce),
                               row("base CE on the predicted KV", &kvpred::HeldOutLosses::predicted_ce),
                               row("auxiliary CE alone", &kvpred::HeldOutLosses::auxiliary_ce),
                               row("consistency L1", &kvpred::HeldOutLosses::consistency)},
                              {false, true, true});
}

}  // namespace

std::vector<RecipeKey> kvpred_recipe_schema() {
  std::vector<RecipeKey> keys = {
      {"method", "kvpred", "kvpred"},
      {"model", "~", "the base: a Hugging Face model directory (config.json + safetensors + tokenizer.json)"},
      {"out", "runs/kvpred", "output folder: kvpred.safetensors, kvpred-init.safetensors, losses.md, flops.md"},
      {"device", "auto", "auto | cpu | cuda | cuda:N"},
      {"dtype", "auto", "the base's dtype: auto | float32 | bfloat16 (the auxiliary trains in float32)"},
      {"threads", "0", "CPU threads (0 = LibTorch's default)"},
      {"auxiliary.kind", "pruned", "pruned (a copy of the base keeping every k-th layer) | model (a separate model)"},
      {"auxiliary.every", "2", "pruned: keep layers 0, k, 2k, ... (the reference's LP-0.50 is 2, LP-0.25 is 4)"},
      {"auxiliary.model", "~", "model: its Hugging Face directory (same vocabulary as the base)"},
      {"auxiliary.layer_map", "[]", "the auxiliary layer each base layer reads; empty = consecutive base layers share"},
      {"predictors.init", "lstsq", "lstsq (ridge least squares on calibration text) | identity (equal K/V widths)"},
      {"predictors.ridge", "1e-3", "lstsq damping, relative to the inputs' mean second moment"},
      {"calibration.batches", "4", "batches for the lstsq fit"},
      {"loss.auxiliary_weight", "1.0", "weight of the auxiliary's own cross-entropy (the reference: 1)"},
      {"loss.consistency_weight", "1.0", "weight of the KV L1 (the reference: 1)"},
      {"loss.consistency_layers", "mean",
       "mean (the paper's better choice) | sum (the reference's configs) over layers"},
      {"data.seed", "0", "training batches; calibration and held-out batches use seeds derived from it"},
      {"train.own_kv", "prompt",
       "prompt: the base reads its own KV from the prompt's last token on, as at inference | none: the prediction "
       "everywhere (the reference)"},
      {"eval.batches", "4", "held-out batches for losses.md"},
      {"eval.flops_lengths", "[1024, 4096, 8192]", "prompt lengths for flops.md"},
      {"data.loss_on_prompt", "true", "cross-entropy on every token (the reference) | false: answers only"},
  };
  CosineLoopDefaults loop;
  loop.lr = "3e-4";
  loop.lr_note = "AdamW peak (the reference: 1.2e-3 over 70k steps of 2M tokens)";
  loop.warmup_steps = "20";
  loop.min_lr_note = "cosine decay floor (the reference: 0.1)";
  loop.weight_decay_note = "(the reference: 0.1 over pretraining-scale data)";
  for (const auto& group : {cosine_loop_keys("train", loop), data_recipe_keys("256", "1024")})
    keys.insert(keys.end(), group.begin(), group.end());
  return keys;
}

void run_kvpred_recipe(const Recipe& recipe, bool resume) {
  const std::string kind = recipe.get_string("auxiliary.kind");
  if (kind != "pruned" && kind != "model")
    fail_input("recipe", "auxiliary.kind", "expected pruned or model, got '" + kind + "'");
  if (kind == "model" && !recipe.has("auxiliary.model"))
    fail_input("recipe", "auxiliary.model", "missing: auxiliary.kind model needs the auxiliary's directory");
  const std::string init = recipe.get_string("predictors.init");
  if (init != "lstsq" && init != "identity")
    fail_input("recipe", "predictors.init", "expected lstsq or identity, got '" + init + "'");
  const std::string own_kv = recipe.get_string("train.own_kv");
  if (own_kv != "prompt" && own_kv != "none")
    fail_input("recipe", "train.own_kv", "expected prompt or none, got '" + own_kv + "'");
  const std::string reduction = recipe.get_string("loss.consistency_layers");
  if (reduction != "mean" && reduction != "sum")
    fail_input("recipe", "loss.consistency_layers", "expected mean or sum, got '" + reduction + "'");
  for (const char* key : {"train.batch_size", "train.micro_batches", "calibration.batches", "eval.batches"})
    if (recipe.get_int(key) < 1) fail_input("recipe", key, "expected >= 1");
  if (recipe.get_int("train.steps") < 0) fail_input("recipe", "train.steps", "expected >= 0");
  if (!(recipe.get_double("predictors.ridge") >= 0)) fail_input("recipe", "predictors.ridge", "expected >= 0");
  const std::vector<int64_t> flops_lengths = recipe.get_int_list("eval.flops_lengths");
  for (int64_t length : flops_lengths)
    if (length < 2) fail_input("recipe", "eval.flops_lengths", "expected prompt lengths >= 2");
  TaskMixture data = recipe_task_mixture(recipe);
  data.loss_on_prompt = recipe.get_bool("data.loss_on_prompt");

  Ranks ranks = recipe_ranks(recipe);
  const at::Device device = ranks.device;
  const bool main_rank = ranks.is_main();
  LoadedModel loaded = load_frozen_model(recipe, device);
  const BatchSource batches = recipe_batches(recipe, loaded, data, recipe.get_int("train.batch_size"));

  const at::TensorOptions trainable = at::TensorOptions().device(device).dtype(at::kFloat);
  const std::vector<int64_t> layer_map = recipe.get_int_list("auxiliary.layer_map");
  std::map<std::string, std::string> attributes;
  KvPredictor predictor{nullptr};
  int64_t every = 0;
  if (kind == "pruned") {
    every = recipe.get_int("auxiliary.every");
    predictor = kvpred::pruned_predictor(loaded.model, every, layer_map, trainable);
  } else {
    LoadedModel auxiliary = load_model(recipe.get_string("auxiliary.model"), device, at::kFloat);
    predictor = kvpred::separate_predictor(loaded.model, auxiliary.model, layer_map, trainable);
    std::string name = auxiliary.dir;  // the directory's own name, for report labels
    while (name.size() > 1 && name.back() == '/') name.pop_back();
    attributes["auxiliary_name"] = std::filesystem::path(name).filename().string();
  }
  const ModelConfig& config = loaded.config;
  const ModelConfig& auxiliary_config = predictor->auxiliary->config;

  const std::string out = recipe.get_string("out");
  const std::string recipe_text = recipe.to_yaml();
  if (main_rank) start_run_folder(recipe, out);
  const int64_t flops_length = data.max_tokens;
  const double flops_ratio =
      forward_flops(config, flops_length, 0, 1) / kv_prediction_prefill_flops(config, auxiliary_config, flops_length);
  if (main_rank)
    std::cerr << "kvpred: "
              << (every > 0 ? "the base keeping 1 layer in " + std::to_string(every) : attributes["auxiliary_name"])
              << " as the auxiliary (" << auxiliary_config.num_layers << " of " << config.num_layers << " layers), "
              << fixed(flops_ratio, 2) << "x fewer prefill FLOPs at " << flops_length << " tokens, on " << device.str()
              << std::endl;

  const auto started = std::chrono::steady_clock::now();
  int64_t calibration_tokens = 0;
  if (init == "identity") {
    predictor->set_identity();
  } else {
    calibration_tokens =
        kvpred::fit_predictors(predictor, loaded.model, batches, mix_seed({data.seed, 0xca1}),
                               recipe.get_int("calibration.batches"), recipe.get_double("predictors.ridge"));
  }
  const double init_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  kvpred::ObjectiveConfig objective_config;
  objective_config.batches = batches;
  objective_config.seed = data.seed;
  objective_config.auxiliary_weight = recipe.get_double("loss.auxiliary_weight");
  objective_config.consistency_weight = recipe.get_double("loss.consistency_weight");
  objective_config.sum_layers = reduction == "sum";
  objective_config.own_kv_after_prompt = own_kv == "prompt";
  kvpred::KvPredictionObjective objective(loaded.model, predictor, objective_config);
  const int64_t eval_batches = recipe.get_int("eval.batches");
  const kvpred::HeldOutLosses initial = objective.held_out(eval_batches);
  std::map<std::string, double> metrics = {{"pruned_every", static_cast<double>(every)},
                                           {"auxiliary_layers", static_cast<double>(auxiliary_config.num_layers)},
                                           {"flops_ratio", flops_ratio},
                                           {"consistency_weight", objective_config.consistency_weight},
                                           {"own_kv", objective_config.own_kv_after_prompt ? 1.0 : 0.0},
                                           {"flops_tokens", static_cast<double>(flops_length)},
                                           {"calibration_tokens", static_cast<double>(calibration_tokens)},
                                           {"init_seconds", init_seconds}};
  auto export_to = [&](const std::string& path, int64_t steps, const kvpred::HeldOutLosses& losses) {
    if (!main_rank) return;
    std::map<std::string, double> values = metrics;
    values["steps"] = static_cast<double>(steps);
    values["heldout_predicted_ce"] = losses.predicted_ce;
    values["heldout_auxiliary_ce"] = losses.auxiliary_ce;
    values["heldout_base_ce"] = losses.base_ce;
    write_artifact(path, kvpred::kv_prediction_artifact(predictor, recipe_text, values, attributes,
                                                        loaded.model->output_weight().scalar_type()));
  };
  export_to(out + "/kvpred-init.safetensors", 0, initial);

  LoopConfig loop = cosine_loop(recipe, out, resume);
  loop.optimizer.beta2 = 0.95;  // the reference's AdamW (0.9, 0.95)
  loop.bf16_autocast = device.is_cuda();
  const auto trained_from = std::chrono::steady_clock::now();
  if (loop.steps > 0) run_training(objective, loop, ranks.group());
  const double train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - trained_from).count();
  const kvpred::HeldOutLosses trained = objective.held_out(eval_batches);
  metrics["train_seconds"] = train_seconds;
  const std::string path = out + "/kvpred.safetensors";
  export_to(path, loop.steps, trained);
  if (!main_rank) return;

  const std::string losses = losses_table(initial, trained);
  write_text_atomically(out + "/losses.md", "Held-out losses (" + std::to_string(eval_batches) + " batches, " +
                                                std::to_string(loop.steps) + " steps)\n\n" + losses);
  const std::string flops = flops_table(config, auxiliary_config, flops_lengths);
  write_text_atomically(out + "/flops.md", "Prefill (time to first token) FLOPs, matmuls only\n\n" + flops);
  std::cout << losses << "\n"
            << flops << std::fixed << std::setprecision(2) << "init " << init_seconds << " s, training "
            << train_seconds << " s\nartifact: " << path << " (initialisation: " << out
            << "/kvpred-init.safetensors)\n";
}

}  // namespace kvforge
