#pragma once
// The recipe keys the method trainers share: `data.*` (the synthetic task mixture, or document files cut into windows)
// and the `train.*` settings of a cosine-schedule training loop.
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

// train.steps, train.micro_batches, train.lr (peak of a warmup + cosine schedule), train.warmup_steps,
// train.min_lr_ratio, train.weight_decay, train.max_grad_norm, train.log_every, train.checkpoint_every; AdamW with
// betas (0.9, 0.999); checkpoints in `out`, the recipe's text stored with them.
LoopConfig cosine_loop(const Recipe& recipe, const std::string& out, bool resume);

}  // namespace kvforge
