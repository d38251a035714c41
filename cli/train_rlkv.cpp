#include "cli/train_rlkv.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <iomanip>
#include <iostream>
#include <memory>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "checkpoints/artifact.h"
#include "cli/ranks.h"
#include "cli/trainer_recipe.h"
#include "eval/report.h"
#include "policies/heads.h"
#include "policies/peer_artifacts.h"
#include "runtime/file_system.h"
#include "runtime/input_error.h"
#include "runtime/model_loader.h"
#include "trainers/rlkv/distill.h"
#include "trainers/rlkv/grpo.h"

namespace kvforge {
namespace {

// Mean of the first and of the last `share` of a curve (at least one point each).
std::pair<double, double> curve_ends(const std::vector<double>& curve, double share = 0.1) {
  if (curve.empty()) return {0, 0};
  const auto width = std::max<size_t>(1, static_cast<size_t>(share * static_cast<double>(curve.size())));
  const double first = std::accumulate(curve.begin(), curve.begin() + width, 0.0) / static_cast<double>(width);
  const double last = std::accumulate(curve.end() - width, curve.end(), 0.0) / static_cast<double>(width);
  return {first, last};
}

std::string gates_table(const at::Tensor& gates) {
  std::vector<std::string> header{"layer"};
  for (int64_t head = 0; head < gates.size(1); ++head) header.push_back("head " + std::to_string(head));
  std::vector<std::vector<std::string>> rows;
  for (int64_t layer = 0; layer < gates.size(0); ++layer) {
    std::vector<std::string> row{std::to_string(layer)};
    for (int64_t head = 0; head < gates.size(1); ++head) {
      std::ostringstream value;
      value << std::fixed << std::setprecision(3) << gates[layer][head].item<double>();
      row.push_back(value.str());
    }
    rows.push_back(row);
  }
  return eval::markdown_table(header, rows, std::vector<bool>(header.size(), true));
}

}  // namespace

std::vector<RecipeKey> rlkv_recipe_schema() {
  return {
      {"method", "rlkv", "rlkv"},
      {"objective", "grpo", "grpo (RLKV: RL with verifiable rewards) | distill (DuoAttention)"},
      {"model", "~", "Hugging Face model directory (config.json + safetensors + tokenizer.json)"},
      {"out", "runs/rlkv", "output folder: rlkv.safetensors, full_attention_heads.tsv, gates.md, metrics.jsonl"},
      {"device", "auto", "auto | cpu | cuda | cuda:N"},
      {"dtype", "auto", "auto | float32 | bfloat16"},
      {"threads", "0", "CPU threads (0 = LibTorch's default)"},
      {"gates.train_sink", "128", "streaming branch while training: first tokens (the paper: 128)"},
      {"gates.train_recent", "256", "streaming branch while training: newest tokens (the paper: 256)"},
      {"gates.deploy_sink", "16", "streaming heads at deployment (RLKV: 16)"},
      {"gates.deploy_recent", "64", "streaming heads at deployment (RLKV: 64)"},
      {"data.task", "arithmetic", "grpo: synthetic task with a checkable final answer"},
      {"data.file", "~", "grpo: JSONL of {\"prompt\", \"answer\"} instead of the synthetic task"},
      {"data.answer_pattern", "Answer:\\s*(-?[0-9]+)", "grpo with data.file: regex whose first group is the answer"},
      {"data.prompt_tokens", "512", "prompt length in the model's tokens (synthetic tasks)"},
      {"data.arithmetic_steps", "2", "operations per arithmetic problem"},
      {"data.seed", "0", ""},
      {"rl.prompts", "32", "problems per step (the paper: 32)"},
      {"rl.group_size", "4", "rollouts per problem, G (the paper: 4)"},
      {"rl.max_new_tokens", "256", "rollout length limit (the paper: 7168 for long reasoning)"},
      {"rl.temperature", "1.0", "rollout sampling temperature (the paper: 1.0)"},
      {"rl.clip_epsilon", "0.4", "surrogate clip (the paper: 0.4)"},
      {"rl.beta", "1e-3", "L1 scale (the paper: 1e-3; 2.5e-3 for Qwen3)"},
      {"rl.tau", "0.5", "reward threshold before the penalty acts (the paper: 0.5; 0.55 for Qwen2.5)"},
      {"rl.advantages", "group", "group (paper Eq. 3) | batch (the paper's shipped config)"},
      {"distill.tasks", "[niah_multikey, passkey]", "distill: retrieval tasks whose answers are supervised"},
      {"distill.batch_size", "4", "distill: sequences per step"},
      {"distill.l1", "0.05", "distill: weight on mean|α| (DuoAttention: 0.05)"},
      {"train.steps", "100", ""},
      {"train.micro_batches", "1",
       "micro-batches per step (each with its own rollouts and penalty r̄, as the paper); a multiple of the ranks"},
      {"train.lr", "1e-2", "AdamW on the gates (RLKV: 1e-2 constant; DuoAttention: 2e-2)"},
      {"train.weight_decay", "0.017", "RLKV's shipped value (the yaml default; it shrinks α further)"},
      {"train.max_grad_norm", "1.0", ""},
      {"train.log_every", "5", ""},
      {"train.checkpoint_every", "0", "0 = only at the end"},
      {"train.time_phases", "false", kTimePhasesNote},
  };
}

void run_rlkv_recipe(const Recipe& recipe, bool resume) {
  const std::string objective_name = recipe.get_string("objective");
  if (objective_name != "grpo" && objective_name != "distill")
    fail_input("recipe", "objective", "expected grpo or distill, got '" + objective_name + "'");
  const std::string advantages = recipe.get_string("rl.advantages");
  if (advantages != "group" && advantages != "batch")
    fail_input("recipe", "rl.advantages", "expected group or batch, got '" + advantages + "'");
  for (const char* key : {"gates.train_recent", "gates.deploy_recent", "rl.prompts", "rl.group_size",
                          "rl.max_new_tokens", "distill.batch_size", "train.steps", "train.micro_batches"})
    if (recipe.get_int(key) < 1) fail_input("recipe", key, "expected >= 1");
  Ranks ranks = recipe_ranks(recipe);
  const at::Device device = ranks.device;
  LoadedModel loaded = load_frozen_model(recipe, device);
  if (!loaded.tokenizer) fail_input(loaded.dir, "tokenizer.json", "missing; rollouts need the model's tokenizer");

  rlkv::HeadGates gates(loaded.config, recipe.get_int("gates.train_sink"), recipe.get_int("gates.train_recent"),
                        device);
  const auto seed = static_cast<uint64_t>(recipe.get_int("data.seed"));
  std::unique_ptr<TrainingObjective> objective;
  const bool grpo = objective_name == "grpo";
  if (grpo) {
    rlkv::ProblemSource problems =
        recipe.has("data.file")
            ? rlkv::jsonl_problems(recipe.get_string("data.file"), recipe.get_string("data.answer_pattern"), seed)
            : rlkv::synthetic_problems(*loaded.tokenizer, recipe.get_string("data.task"),
                                       recipe.get_int("data.prompt_tokens"), recipe.get_int("data.arithmetic_steps"),
                                       seed);
    rlkv::GrpoConfig config;
    config.prompts = recipe.get_int("rl.prompts");
    config.group_size = recipe.get_int("rl.group_size");
    config.max_new_tokens = recipe.get_int("rl.max_new_tokens");
    config.temperature = recipe.get_double("rl.temperature");
    config.clip_epsilon = recipe.get_double("rl.clip_epsilon");
    config.beta = recipe.get_double("rl.beta");
    config.tau = recipe.get_double("rl.tau");
    config.batch_advantages = advantages == "batch";
    config.seed = seed;
    try {
      problems(0, 0, 1);  // a bad task or length fails here, before anything is written
    } catch (const std::invalid_argument& error) {
      fail_input("recipe", "data.task", error.what());
    }
    objective = std::make_unique<rlkv::GrpoObjective>(loaded.model, *loaded.tokenizer, loaded.eos_token_ids, gates,
                                                      std::move(problems), config);
  } else {
    rlkv::DistillConfig config;
    config.data.tasks = recipe.get_string_list("distill.tasks");
    config.data.min_tokens = config.data.max_tokens = recipe.get_int("data.prompt_tokens");
    config.data.loss_on_prompt = false;
    config.data.seed = seed;
    config.batch_size = recipe.get_int("distill.batch_size");
    config.l1 = recipe.get_double("distill.l1");
    const std::vector<std::string>& known = tasks::task_names();
    if (config.data.tasks.empty()) fail_input("recipe", "distill.tasks", "expected at least one task");
    for (const std::string& task : config.data.tasks)
      if (std::find(known.begin(), known.end(), task) == known.end())
        fail_input("recipe", "distill.tasks", "unknown task '" + task + "'");
    if (loaded.eos_token_ids.empty()) fail_input(loaded.dir, "eos_token_id", "missing; answers end with it");
    objective = std::make_unique<rlkv::DistillObjective>(loaded.model, *loaded.tokenizer, loaded.eos_token_ids[0],
                                                         gates, config);
  }

  LoopConfig loop;
  loop.steps = recipe.get_int("train.steps");
  loop.micro_batches = recipe.get_int("train.micro_batches");
  loop.schedule.kind = "constant";
  loop.schedule.peak_lr = recipe.get_double("train.lr");
  loop.schedule.total_steps = loop.steps;
  loop.optimizer.weight_decay = recipe.get_double("train.weight_decay");
  loop.optimizer.beta1 = 0.9;
  loop.optimizer.beta2 = 0.999;
  loop.max_grad_norm = recipe.get_double("train.max_grad_norm");
  loop.log_every = recipe.get_int("train.log_every");
  loop.checkpoint_every = recipe.get_int("train.checkpoint_every");
  loop.time_phases = recipe.get_bool("train.time_phases");
  loop.out_dir = recipe.get_string("out");
  loop.resume = resume;
  loop.recipe_text = recipe.to_yaml();
  if (ranks.is_main()) {
    start_run_folder(recipe, loop.out_dir);
    std::cerr << "rlkv (" << objective_name << "): " << loaded.config.num_layers * loaded.config.num_kv_heads
              << " KV-head gates of " << loaded.dir << " on " << device.str() << ", " << loop.steps << " steps"
              << std::endl;
  }
  const auto started = std::chrono::steady_clock::now();
  const std::vector<StepRecord> records = run_training(*objective, loop, ranks.group());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  loaded.model->set_head_mixing(nullptr);
  if (!ranks.is_main()) return;

  Artifact artifact;
  artifact.method = grpo ? kRlkvMethod : kDuoMethod;
  artifact.model = ModelFingerprint::of(loaded.config);
  artifact.recipe = loop.recipe_text;
  const at::Tensor values = gates.values.detach().to(at::kCPU).clamp(0, 1);
  artifact.tensors["gates"] = values;
  artifact.metrics = {{"train_sink", static_cast<double>(recipe.get_int("gates.train_sink"))},
                      {"train_recent", static_cast<double>(recipe.get_int("gates.train_recent"))},
                      {"deploy_sink", static_cast<double>(recipe.get_int("gates.deploy_sink"))},
                      {"deploy_recent", static_cast<double>(recipe.get_int("gates.deploy_recent"))},
                      {"steps", static_cast<double>(loop.steps)},
                      {"train_seconds", seconds}};
  std::vector<double> losses;
  for (const StepRecord& record : records) losses.push_back(record.loss);
  std::tie(artifact.metrics["loss_first"], artifact.metrics["loss_last"]) = curve_ends(losses);
  if (grpo) {
    // From the step records, which hold every rank's micro-batches: the same whatever the number of ranks.
    const auto rollouts = static_cast<double>(recipe.get_int("rl.prompts") * recipe.get_int("rl.group_size"));
    const double local_micro_batches = static_cast<double>(loop.micro_batches) / ranks.parallel.world_size();
    std::vector<double> rewards;
    double rollout_tokens = 0, rollout_seconds = 0;
    for (const StepRecord& record : records) {
      rewards.push_back(record.metrics.at("reward"));
      rollout_tokens += record.metrics.at("completion_tokens") * rollouts;
      rollout_seconds += record.metrics.at("rollout_s");
    }
    std::tie(artifact.metrics["reward_first"], artifact.metrics["reward_last"]) = curve_ends(rewards);
    artifact.metrics["reward_max"] = rewards.empty() ? 0 : *std::max_element(rewards.begin(), rewards.end());
    // Per rank: tokens one rank samples per second of rollout, and the seconds it spent sampling.
    artifact.metrics["rollout_tokens_per_s"] = rollout_tokens / std::max(rollout_seconds, 1e-9);
    artifact.metrics["rollout_seconds"] = rollout_seconds * local_micro_batches;
  }
  const std::string out = loop.out_dir;
  const std::string path = out + "/" + artifact.method + ".safetensors";
  write_artifact(path, artifact);
  write_text_atomically(out + "/full_attention_heads.tsv", gates_to_tsv(values));
  const std::string table = gates_table(values);
  write_text_atomically(out + "/gates.md", "Gates after " + std::to_string(loop.steps) + " steps (" + objective_name +
                                               "); 1 = full, 0 = streaming\n\n" + table);
  std::cout << table << std::fixed << std::setprecision(3);
  for (const auto& [key, value] : artifact.metrics) std::cout << key << " " << value << "\n";
  std::cout << "artifact: " << path << "\n";
}

}  // namespace kvforge
