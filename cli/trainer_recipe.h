#pragma once
// What the method trainers share: the recipe keys `data.*` (the synthetic task mixture, or document files cut into
// windows), the settings of a cosine-schedule training loop and the frozen model.
#include <cstdint>
#include <string>
#include <vector>

#include "cli/recipe.h"
#include "runtime/model_loader.h"
#include "trainers/task_batches.h"
#include "trainers/training_loop.h"

namespace kvforge {

// data.files, data.tasks, data.weights, data.min_tokens, data.max_tokens (with these defaults), data.arithmetic_steps,
// data.seed.
std::vector<RecipeKey> data_recipe_keys(const std::string& min_tokens, const std::string& max_tokens);

// data.tasks, data.weights, data.min_tokens, data.max_tokens, data.arithmetic_steps and data.seed, checked (an
// InputError naming the recipe field).
TaskMixture recipe_task_mixture(const Recipe& recipe);

// Micro-batches of `batch_size` sequences: windows of data.max_tokens tokens of data.files when any are named, else
// the task mixture. The seed of each call picks the batch. `model` (its tokenizer) must outlive the source.
BatchSource recipe_batches(const Recipe& recipe, const LoadedModel& model, const TaskMixture& mixture,
                           int64_t batch_size);

// Defaults (and notes on where they come from) of a cosine loop's recipe keys.
struct CosineLoopDefaults {
  std::string steps = "200", steps_note = "0 = export the initialisation only";
  std::string lr = "1e-3", lr_note = "AdamW peak";
  std::string warmup_steps = "10";
  std::string min_lr_ratio = "0.1", min_lr_note = "cosine decay floor";
  std::string weight_decay = "0.0", weight_decay_note;
  std::string batch_size = "4";
};

// The note of every trainer's `time_phases` key.
inline constexpr const char* kTimePhasesNote =
    "log compute_s, wait_s, all_reduce_s, update_s per step (syncs the device: for scaling studies)";

// SECTION.steps, .batch_size, .micro_batches, .lr, .warmup_steps, .min_lr_ratio, .weight_decay, .max_grad_norm,
// .log_every, .checkpoint_every, .time_phases.
std::vector<RecipeKey> cosine_loop_keys(const std::string& section, const CosineLoopDefaults& defaults);

// The loop those keys describe (SECTION.lr the peak of a warmup + cosine schedule); AdamW with betas (0.9, 0.999);
// checkpoints in `out`, the recipe's text stored with them.
LoopConfig cosine_loop(const Recipe& recipe, const std::string& out, bool resume, const std::string& section = "train");

// The run's output folder `out` (the recipe's `out` key) created, with the resolved recipe written into it as
// recipe.yaml. Rank 0 calls it once the inputs are checked: a bad `out` is an InputError naming the key.
void start_run_folder(const Recipe& recipe, const std::string& out);

// `model` on `device` in the recipe's `dtype`, with `threads` applied: the frozen model a method trains around.
LoadedModel load_frozen_model(const Recipe& recipe, const at::Device& device);

}  // namespace kvforge
