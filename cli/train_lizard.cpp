#include "cli/train_lizard.h"

#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <iomanip>
#include <iostream>

#include "checkpoints/artifact.h"
#include "cli/device_choice.h"
#include "cli/trainer_recipe.h"
#include "policies/lizard.h"
#include "runtime/file_system.h"
#include "runtime/input_error.h"
#include "runtime/model_loader.h"
#include "trainers/lizard/attention_transfer.h"

namespace kvforge {

std::vector<RecipeKey> lizard_recipe_schema() {
  std::vector<RecipeKey> keys = {
      {"method", "lizard", "lizard"},
      {"model", "~", "Hugging Face model directory (config.json + safetensors + tokenizer.json)"},
      {"out", "runs/lizard", "output folder: lizard.safetensors, metrics.jsonl"},
      {"device", "auto", "auto | cpu | cuda | cuda:N"},
      {"dtype", "auto", "auto | float32 | bfloat16"},
      {"threads", "0", "CPU threads (0 = LibTorch's default)"},
      {"attention.kind", "lizard", "lizard (gates, sinks, separate normalisers) | lolcats (the baseline)"},
      {"attention.window", "64", "newest keys seen by exact softmax (Lizard: 128, LoLCATs: 64)"},
      {"attention.linear_keys", "outside", "outside (keys that left the window) | all (the formula read literally)"},
      {"attention.window_scale", "1.0", "Lizard's α in Y_linear + α·Y_window"},
      {"attention.feature_dim", "64", "per half of the Hedgehog map"},
      {"attention.sinks", "4", "Lizard's meta-memory logits per head"},
      {"attention.features_after_rope", "~", "feature maps on RoPE'd q/k (default: Lizard no, LoLCATs yes)"},
      {"attention.chunk", "64", "chunk of the parallel form"},
      {"train.steps", "200", "stage 1 (attention transfer) steps"},
      {"train.batch_size", "4", "sequences per micro-batch"},
      {"train.micro_batches", "1", ""},
      {"train.lr", "1e-2", "AdamW peak (LoLCATs: 1e-2; Lizard: 1e-3)"},
      {"train.warmup_steps", "10", ""},
      {"train.min_lr_ratio", "0.1", "cosine decay floor (Lizard: 0.1)"},
      {"train.weight_decay", "0.0", ""},
      {"train.max_grad_norm", "1.0", ""},
      {"train.log_every", "20", ""},
      {"train.checkpoint_every", "0", "0 = only at the end"},
      {"eval.batches", "4", "held-out batches for the transfer loss before and after"},
  };
  const std::vector<RecipeKey> data = data_recipe_keys("256", "1024");
  keys.insert(keys.end(), data.begin(), data.end());
  return keys;
}

void run_lizard_recipe(const Recipe& recipe, bool resume) {
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
  config.chunk = recipe.get_int("attention.chunk");
  config.features_after_rope = recipe.has("attention.features_after_rope")
                                   ? recipe.get_bool("attention.features_after_rope")
                                   : kind == "lolcats";
  for (const char* key : {"attention.window", "attention.feature_dim", "attention.chunk", "train.batch_size",
                          "train.micro_batches", "eval.batches"})
    if (recipe.get_int(key) < 1) fail_input("recipe", key, "expected >= 1");
  if (config.sinks < 0) fail_input("recipe", "attention.sinks", "expected >= 0");
  const TaskMixture data = recipe_task_mixture(recipe);

  const at::Device device = parse_device(recipe.get_string("device"), "device");
  const at::ScalarType dtype = parse_model_dtype(recipe.get_string("dtype"), device, "dtype");
  if (recipe.get_int("threads") > 0) at::set_num_threads(static_cast<int>(recipe.get_int("threads")));
  LoadedModel loaded = load_model(recipe.get_string("model"), device, dtype);
  for (at::Tensor& parameter : loaded.model->parameters()) parameter.set_requires_grad(false);  // frozen teacher
  const BatchSource batches = recipe_batches(recipe, loaded, data, recipe.get_int("train.batch_size"));
  Linearization linearization(loaded.config, config, at::TensorOptions().device(device).dtype(at::kFloat));

  const std::string out = recipe.get_string("out");
  std::filesystem::create_directories(out);
  write_text_atomically(out + "/recipe.yaml", recipe.to_yaml());
  lizard::AttentionTransferObjective objective(loaded.model, linearization, batches, data.seed);
  const int64_t eval_batches = recipe.get_int("eval.batches");
  const double before = objective.held_out(eval_batches);
  LoopConfig loop = cosine_loop(recipe, out, resume);
  loop.bf16_autocast = device.is_cuda();
  const auto started = std::chrono::steady_clock::now();
  if (loop.steps > 0) run_training(objective, loop, nullptr);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const double after = objective.held_out(eval_batches);

  Artifact artifact;
  artifact.method = kLizardMethod;
  artifact.model = ModelFingerprint::of(loaded.config);
  artifact.recipe = loop.recipe_text;
  artifact.metrics = lizard_config_metrics(config);
  artifact.metrics["steps"] = static_cast<double>(loop.steps);
  artifact.metrics["transfer_loss_before"] = before;
  artifact.metrics["transfer_loss_after"] = after;
  artifact.metrics["train_seconds"] = seconds;
  for (const auto& [name, parameter] : linearization.named_parameters())
    artifact.tensors[name] = parameter.detach().to(at::kCPU, at::kFloat).contiguous();
  const std::string path = out + "/lizard.safetensors";
  write_artifact(path, artifact);
  std::cout << std::setprecision(4) << "held-out transfer loss (mean per-layer MSE): " << before << " -> " << after
            << " after " << loop.steps << " steps (" << std::fixed << std::setprecision(1) << seconds
            << " s)\nartifact: " << path << "\n";
}

}  // namespace kvforge
