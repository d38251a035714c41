#include "cli/trainer_recipe.h"

#include <algorithm>
#include <memory>

#include "cli/device_choice.h"
#include "runtime/file_system.h"
#include "runtime/input_error.h"
#include "trainers/text_batches.h"

namespace kvforge {

std::vector<RecipeKey> data_recipe_keys(const std::string& min_tokens, const std::string& max_tokens) {
  return {
      {"data.files", "[]", "text or JSONL documents to train on (windows of data.max_tokens); else the tasks"},
      {"data.tasks", "[passkey, niah_single, niah_multikey, arithmetic]", "synthetic tasks the text comes from"},
      {"data.weights", "[]", "task weights (empty = uniform)"},
      {"data.min_tokens", min_tokens, "sequence length range"},
      {"data.max_tokens", max_tokens, ""},
      {"data.arithmetic_steps", "2", ""},
      {"data.seed", "0", "training batches; calibration and held-out batches use seeds derived from it"},
  };
}

TaskMixture recipe_task_mixture(const Recipe& recipe) {
  TaskMixture data;
  data.tasks = recipe.get_string_list("data.tasks");
  data.weights = recipe.get_double_list("data.weights");
  data.min_tokens = recipe.get_int("data.min_tokens");
  data.max_tokens = recipe.get_int("data.max_tokens");
  data.arithmetic_steps = recipe.get_int("data.arithmetic_steps");
  data.seed = static_cast<uint64_t>(recipe.get_int("data.seed"));
  validate(data);
  return data;
}

BatchSource recipe_batches(const Recipe& recipe, const LoadedModel& model, const TaskMixture& mixture,
                           int64_t batch_size) {
  if (!model.tokenizer) fail_input(model.dir, "tokenizer.json", "missing; training text needs the tokenizer");
  if (model.eos_token_ids.empty()) fail_input(model.dir, "eos_token_id", "missing; sequences end with it");
  const std::vector<std::string> files = recipe.get_string_list("data.files");
  if (!files.empty()) {
    auto windows = std::make_shared<TextWindows>(*model.tokenizer, files, mixture.max_tokens);
    return [windows, batch_size](uint64_t seed, int64_t step, int64_t micro_batch) {
      return windows->batch(seed, step, micro_batch, batch_size);
    };
  }
  const Tokenizer* tokenizer = &*model.tokenizer;
  const int64_t eos = model.eos_token_ids[0];
  const int64_t pad = model.config.pad_token_id.value_or(eos);
  return [mixture, tokenizer, eos, pad, batch_size](uint64_t seed, int64_t step, int64_t micro_batch) {
    TaskMixture seeded = mixture;
    seeded.seed = seed;
    return make_task_batch(seeded, *tokenizer, eos, pad, step, micro_batch, batch_size);
  };
}

std::vector<RecipeKey> cosine_loop_keys(const std::string& section, const CosineLoopDefaults& defaults) {
  const std::string s = section + ".";
  return {
      {s + "steps", defaults.steps, defaults.steps_note},
      {s + "batch_size", defaults.batch_size, "sequences per micro-batch"},
      {s + "micro_batches", "1", ""},
      {s + "lr", defaults.lr, defaults.lr_note},
      {s + "warmup_steps", defaults.warmup_steps, ""},
      {s + "min_lr_ratio", defaults.min_lr_ratio, defaults.min_lr_note},
      {s + "weight_decay", defaults.weight_decay, defaults.weight_decay_note},
      {s + "max_grad_norm", "1.0", ""},
      {s + "log_every", "20", ""},
      {s + "checkpoint_every", "0", "0 = only at the end"},
      {s + "time_phases", "false", kTimePhasesNote},
  };
}

LoopConfig cosine_loop(const Recipe& recipe, const std::string& out, bool resume, const std::string& section) {
  const std::string s = section + ".";
  for (const std::string key : {"batch_size", "micro_batches"})
    if (recipe.get_int(s + key) < 1) fail_input("recipe", s + key, "expected >= 1");
  if (recipe.get_int(s + "steps") < 0) fail_input("recipe", s + "steps", "expected >= 0");
  LoopConfig loop;
  loop.steps = recipe.get_int(s + "steps");
  loop.micro_batches = recipe.get_int(s + "micro_batches");
  loop.schedule.kind = "cosine";
  loop.schedule.peak_lr = recipe.get_double(s + "lr");
  loop.schedule.warmup_steps = recipe.get_int(s + "warmup_steps");
  loop.schedule.min_lr_ratio = recipe.get_double(s + "min_lr_ratio");
  loop.schedule.total_steps = std::max<int64_t>(loop.steps, 1);
  loop.optimizer.weight_decay = recipe.get_double(s + "weight_decay");
  loop.optimizer.beta1 = 0.9;
  loop.optimizer.beta2 = 0.999;
  loop.max_grad_norm = recipe.get_double(s + "max_grad_norm");
  loop.log_every = recipe.get_int(s + "log_every");
  loop.checkpoint_every = recipe.get_int(s + "checkpoint_every");
  loop.time_phases = recipe.get_bool(s + "time_phases");
  loop.out_dir = out;
  loop.section = section;
  loop.resume = resume;
  loop.recipe_text = recipe.to_yaml();
  return loop;
}

void start_run_folder(const Recipe& recipe, const std::string& out) {
  make_output_folder(out, recipe.origin("out"), "out");
  write_text_atomically(out + "/recipe.yaml", recipe.to_yaml());
}

LoadedModel load_frozen_model(const Recipe& recipe, const at::Device& device) {
  const at::ScalarType dtype = parse_model_dtype(recipe.get_string("dtype"), device, "dtype");
  if (recipe.get_int("threads") > 0) at::set_num_threads(static_cast<int>(recipe.get_int("threads")));
  LoadedModel loaded = load_model(recipe.get_string("model"), device, dtype);
  for (at::Tensor& parameter : loaded.model->parameters()) parameter.set_requires_grad(false);
  return loaded;
}

}  // namespace kvforge
