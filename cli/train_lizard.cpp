#include "cli/train_lizard.h"

#include <torch/torch.h>

#include <chrono>
#include <iomanip>
#include <iostream>

#include "checkpoints/artifact.h"
#include "cli/device_choice.h"
#include "cli/ranks.h"
#include "cli/trainer_recipe.h"
#include "policies/lizard.h"
#include "runtime/file_system.h"
#include "runtime/input_error.h"
#include "runtime/model_loader.h"
#include "trainers/lizard/attention_transfer.h"
#include "trainers/lizard/fine_tune.h"

namespace kvforge {
namespace {

LinearizationConfig recipe_linearization(const Recipe& recipe) {
  LinearizationConfig config;
  const std::string kind = recipe.get_string("attention.kind");
  if (kind != "lizard" && kind != "lolcats")
    fail_input("recipe", "attention.kind", "expected lizard or lolcats, got '" + kind + "'");
  config.attention.kind = kind == "lizard" ? HybridKind::kLizard : HybridKind::kLolcats;
  const std::string linear_keys = recipe.get_string("attention.linear_keys");
  if (linear_keys != "outside" && linear_keys != "all")
    fail_input("recipe", "attention.linear_keys", "expected outside or all, got '" + linear_keys + "'");
  if (kind == "lolcats" && linear_keys == "all")
    fail_input("recipe", "attention.linear_keys", "LoLCATs' linear terms cover only keys outside the window");
  config.attention.linear_keys = linear_keys == "all" ? LinearKeys::kAll : LinearKeys::kOutsideWindow;
  config.attention.window = recipe.get_int("attention.window");
  config.attention.window_scale = recipe.get_double("attention.window_scale");
  config.feature_dim = recipe.get_int("attention.feature_dim");
  config.sinks = recipe.get_int("attention.sinks");
  config.gates = recipe.get_bool("attention.gates");
  config.chunk = recipe.get_int("attention.chunk");
  config.features_after_rope = recipe.has("attention.features_after_rope")
                                   ? recipe.get_bool("attention.features_after_rope")
                                   : kind == "lolcats";
  for (const char* key : {"attention.window", "attention.feature_dim", "attention.chunk", "eval.batches"})
    if (recipe.get_int(key) < 1) fail_input("recipe", key, "expected >= 1");
  if (config.sinks < 0) fail_input("recipe", "attention.sinks", "expected >= 0");
  return config;
}

LoraConfig recipe_lora(const Recipe& recipe) {
  LoraConfig lora;
  lora.rank = recipe.get_int("lora.rank");
  lora.alpha = recipe.get_double("lora.alpha");
  lora.targets = 0;
  for (const std::string& target : recipe.get_string_list("lora.targets")) {
    const int bit = target == "q"   ? kLoraQuery
                    : target == "k" ? kLoraKey
                    : target == "v" ? kLoraValue
                    : target == "o" ? kLoraOutput
                                    : 0;
    if (bit == 0) fail_input("recipe", "lora.targets", "expected a list of q, k, v, o; got '" + target + "'");
    lora.targets |= bit;
  }
  if (lora.rank < 0) fail_input("recipe", "lora.rank", "expected >= 0 (0 = no adapters)");
  if (lora.rank > 0 && lora.targets == 0) fail_input("recipe", "lora.targets", "expected at least one of q, k, v, o");
  if (!(lora.alpha > 0)) fail_input("recipe", "lora.alpha", "expected > 0");
  return lora;
}

}  // namespace

std::vector<RecipeKey> lizard_recipe_schema() {
  std::vector<RecipeKey> keys = {
      {"method", "lizard", "lizard"},
      {"model", "~", "Hugging Face model directory (config.json + safetensors + tokenizer.json)"},
      {"out", "runs/lizard",
       "output folder: lizard.safetensors, recipe.yaml, stage1/ and stage2/ (metrics, checkpoints)"},
      {"device", "auto", "auto | cpu | cuda | cuda:N"},
      {"dtype", "auto", "auto | float32 | bfloat16"},
      {"threads", "0", "CPU threads (0 = LibTorch's default)"},
      {"attention.kind", "lizard", "lizard (gates, sinks, separate normalisers) | lolcats (the baseline)"},
      {"attention.window", "64", "newest keys seen by exact softmax (Lizard: 128, LoLCATs: 64)"},
      {"attention.linear_keys", "outside", "outside (keys that left the window) | all (the formula read literally)"},
      {"attention.window_scale", "1.0", "Lizard's α in Y_linear + α·Y_window"},
      {"attention.feature_dim", "64", "per half of the Hedgehog map"},
      {"attention.sinks", "4", "Lizard's meta-memory logits per head"},
      {"attention.gates", "true", "Lizard's data-dependent decay; false = γ ≡ 1 (the ungated baseline)"},
      {"attention.features_after_rope", "~", "feature maps on RoPE'd q/k (default: Lizard no, LoLCATs yes)"},
      {"attention.chunk", "64", "chunk of the parallel form"},
      {"lora.rank", "8", "stage 2 adapters' rank (0 = none: stage 2 then needs lora.train_linearization)"},
      {"lora.alpha", "16", "adapter scale alpha / rank"},
      {"lora.targets", "[q, k, v]", "projections adapted (Lizard: q, k, v; LoLCATs adds o)"},
      {"lora.train_linearization", "false", "stage 2 also trains the feature maps, gates and sinks"},
      {"export.merge_lora", "false", "export W + (alpha / rank)·B A instead of the adapters"},
      {"eval.batches", "4", "held-out batches for the transfer and language-model losses"},
      {"data.loss_on_prompt", "true",
       "stage 2's cross-entropy on every token (the paper, on text) | false: answers only (synthetic task prompts are "
       "mostly random filler)"},
  };
  CosineLoopDefaults transfer;
  transfer.steps_note = "stage 1 (attention transfer) steps";
  transfer.lr = "1e-2";
  transfer.lr_note = "AdamW peak (LoLCATs: 1e-2; Lizard: 1e-3)";
  transfer.min_lr_note = "cosine decay floor (Lizard: 0.1)";
  CosineLoopDefaults fine_tune;
  fine_tune.steps = "100";
  fine_tune.steps_note = "stage 2 (LoRA, language-model loss) steps; 0 = stage 1 only";
  fine_tune.lr = "5e-4";
  fine_tune.lr_note = "AdamW peak (Lizard: 5e-4; LoLCATs: 1e-4)";
  for (const auto& group :
       {cosine_loop_keys("stage1", transfer), cosine_loop_keys("stage2", fine_tune), data_recipe_keys("256", "1024")})
    keys.insert(keys.end(), group.begin(), group.end());
  return keys;
}

void run_lizard_recipe(const Recipe& recipe, bool resume) {
  const LinearizationConfig config = recipe_linearization(recipe);
  const LoraConfig lora = recipe_lora(recipe);
  const bool train_linearization = recipe.get_bool("lora.train_linearization");
  const bool merge = recipe.get_bool("export.merge_lora");
  const std::string out = recipe.get_string("out");
  LoopConfig transfer_loop = cosine_loop(recipe, out + "/stage1", resume, "stage1");
  LoopConfig tune_loop = cosine_loop(recipe, out + "/stage2", resume, "stage2");
  if (tune_loop.steps > 0 && lora.rank == 0 && !train_linearization)
    fail_input("recipe", "lora.rank", "stage 2 has nothing to train: set a rank or lora.train_linearization");
  if (merge && (tune_loop.steps == 0 || lora.rank == 0))
    fail_input("recipe", "export.merge_lora", "there are no adapters to merge (stage2.steps or lora.rank is 0)");
  TaskMixture data = recipe_task_mixture(recipe);
  data.loss_on_prompt = recipe.get_bool("data.loss_on_prompt");

  Ranks ranks = recipe_ranks(recipe);
  const at::Device device = ranks.device;
  const bool main_rank = ranks.is_main();
  LoadedModel loaded = load_frozen_model(recipe, device);
  transfer_loop.bf16_autocast = tune_loop.bf16_autocast = device.is_cuda();
  if (main_rank) {
    start_run_folder(recipe, out);
    std::cerr << "lizard: " << variant_name(config) << " linearization of " << loaded.dir << " on " << device.str()
              << ", window " << config.attention.window << ", stage 1 " << transfer_loop.steps
              << " steps (attention transfer), stage 2 " << tune_loop.steps << " steps ("
              << (lora.rank > 0 ? "LoRA r" + std::to_string(lora.rank) : std::string("no LoRA"))
              << ", language-model loss)" << std::endl;
  }
  const int64_t eval_batches = recipe.get_int("eval.batches");
  auto held_out_lm = [&](Linearization* linearization, const BatchSource& batches) {
    return lizard::held_out_language_model_loss(loaded.model, linearization, batches, data.seed, eval_batches);
  };
  auto seconds_since = [](std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };

  // Stage 1: attention transfer.
  const BatchSource transfer_batches = recipe_batches(recipe, loaded, data, recipe.get_int("stage1.batch_size"));
  Linearization linearization(loaded.config, config, at::TensorOptions().device(device).dtype(at::kFloat));
  lizard::AttentionTransferObjective transfer(loaded.model, linearization, transfer_batches, data.seed);
  const double transfer_before = transfer.held_out(eval_batches);
  auto started = std::chrono::steady_clock::now();
  if (transfer_loop.steps > 0) run_training(transfer, transfer_loop, ranks.group());
  const double transfer_seconds = seconds_since(started);
  const double transfer_after = transfer.held_out(eval_batches);
  const double lm_teacher = held_out_lm(nullptr, transfer_batches);
  const double lm_stage1 = held_out_lm(&linearization, transfer_batches);
  if (main_rank)
    std::cout << std::setprecision(4) << "stage 1: held-out transfer loss (mean per-layer MSE) " << transfer_before
              << " -> " << transfer_after << " in " << transfer_loop.steps << " steps (" << std::fixed
              << std::setprecision(1) << transfer_seconds << " s)\n"
              << std::defaultfloat;

  // Stage 2: the language-model loss through LoRA on the linearized model.
  Linearization tuned = linearization;
  double lm_stage2 = lm_stage1, tune_seconds = 0;
  if (tune_loop.steps > 0) {
    const BatchSource tune_batches = recipe_batches(recipe, loaded, data, recipe.get_int("stage2.batch_size"));
    tuned = lora.rank > 0 ? linearization.with_lora(lora, mix_seed({data.seed, 0x10a}))
                          : linearization.on(linearization.parameters().front().options());
    if (lora.rank == 0)
      for (const at::Tensor& parameter : tuned.parameters()) parameter.set_requires_grad(true);
    lizard::FineTuneObjective fine_tune(loaded.model, tuned, tune_batches, data.seed, train_linearization);
    started = std::chrono::steady_clock::now();
    run_training(fine_tune, tune_loop, ranks.group());
    tune_seconds = seconds_since(started);
    lm_stage2 = held_out_lm(&tuned, transfer_batches);
  }
  if (!main_rank) return;
  std::cout << std::setprecision(4) << "held-out language-model loss: teacher " << lm_teacher << ", after stage 1 "
            << lm_stage1 << ", after stage 2 " << lm_stage2 << " (" << tune_loop.steps << " steps, " << std::fixed
            << std::setprecision(1) << tune_seconds << " s)\n"
            << std::defaultfloat;

  const Linearization exported = merge ? tuned.merged(attention_weights(loaded.model)) : tuned;
  Artifact artifact;
  artifact.method = kLizardMethod;
  artifact.model = ModelFingerprint::of(loaded.config);
  artifact.recipe = transfer_loop.recipe_text;
  artifact.metrics = lizard_config_metrics(exported.config);
  artifact.metrics["steps"] = static_cast<double>(transfer_loop.steps);
  artifact.metrics["stage2_steps"] = static_cast<double>(tune_loop.steps);
  artifact.metrics["transfer_loss_before"] = transfer_before;
  artifact.metrics["transfer_loss_after"] = transfer_after;
  artifact.metrics["lm_loss_teacher"] = lm_teacher;
  artifact.metrics["lm_loss_stage1"] = lm_stage1;
  artifact.metrics["lm_loss_stage2"] = lm_stage2;
  artifact.metrics["train_seconds"] = transfer_seconds + tune_seconds;
  // Trained parameters are fp32; merged projections keep the model's dtype.
  for (const auto& [name, parameter] : exported.named_parameters())
    artifact.tensors[name] = parameter.detach().to(at::kCPU).contiguous();
  const std::string path = out + "/lizard.safetensors";
  write_artifact(path, artifact);
  std::cout << "artifact: " << path << "\n";
}

}  // namespace kvforge
