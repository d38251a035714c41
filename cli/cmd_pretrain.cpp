// kvforge pretrain: train a built-in base model (byte tokenizer, Llama architecture, GQA) on the
// synthetic task mixture. torchrun --no-python --nproc-per-node N kvforge pretrain ... runs it data-parallel.
#include <iomanip>
#include <iostream>

#include "cli/commands.h"
#include "cli/ranks.h"
#include "cli/recipe.h"
#include "cli/trainer_recipe.h"
#include "runtime/file_system.h"
#include "runtime/input_error.h"
#include "runtime/model_loader.h"
#include "runtime/parallel/distributed.h"
#include "trainers/pretrain/pretrain.h"

namespace kvforge {
namespace {

std::vector<RecipeKey> pretrain_schema() {
  return {
      {"out", "runs/pretrain", "output folder: model/, checkpoints/, metrics.jsonl, recipe.yaml, accuracy.md"},
      {"device", "auto", "auto | cpu | cuda | cuda:N (under torchrun: cuda:LOCAL_RANK)"},
      {"threads", "0", "CPU threads for intra-op parallelism (0 = LibTorch's default)"},
      {"model.hidden_size", "128", ""},
      {"model.intermediate_size", "384", ""},
      {"model.num_layers", "4", ""},
      {"model.num_heads", "4", ""},
      {"model.num_kv_heads", "2", "GQA: key/value heads"},
      {"model.max_position_embeddings", "2048", ""},
      {"model.rope_theta", "10000", ""},
      {"model.init_seed", "0", ""},
      {"data.tasks", "[passkey, arithmetic]", "synthetic tasks (eval/tasks)"},
      {"data.weights", "[]", "one per task; empty = uniform"},
      {"data.min_tokens", "128", "prompt length range, in tokens"},
      {"data.max_tokens", "384", ""},
      {"data.arithmetic_steps", "2", "operations per arithmetic problem"},
      {"data.loss_on_prompt", "true", "false = only answers are predicted"},
      {"data.seed", "0", ""},
      {"train.steps", "300", ""},
      {"train.batch_size", "8", "sequences per micro-batch"},
      {"train.micro_batches", "1", "micro-batches per step across all ranks (gradient accumulation × ranks)"},
      {"train.optimizer", "adamw", "adamw | sgd"},
      {"train.lr", "3e-3", "peak learning rate"},
      {"train.schedule", "cosine", "cosine | constant"},
      {"train.warmup_steps", "20", ""},
      {"train.min_lr_ratio", "0.1", ""},
      {"train.weight_decay", "0.0", ""},
      {"train.beta1", "0.9", ""},
      {"train.beta2", "0.95", ""},
      {"train.momentum", "0.0", "sgd only"},
      {"train.max_grad_norm", "1.0", "<= 0 disables clipping"},
      {"train.bf16", "auto", "auto (on for CUDA) | true | false"},
      {"train.log_every", "10", ""},
      {"train.checkpoint_every", "100", "0 = only at the end"},
      {"train.time_phases", "false", kTimePhasesNote},
      {"train.keep_checkpoints", "2", ""},
      {"eval.tasks", "[passkey, arithmetic]", "accuracy measured after training"},
      {"eval.lengths", "[256]", ""},
      {"eval.samples", "20", "per task and length"},
      {"export.dtype", "float32", "float32 | bfloat16"},
      {"export.max_shard_mb", "0", "0 = one model.safetensors"},
  };
}

struct PretrainArgs {
  std::vector<std::string> positional;
  bool resume = false;
};

void run_pretrain_command(const PretrainArgs& args) {
  Recipe recipe(pretrain_schema());
  recipe.apply_arguments(args.positional);
  const DistributedEnv env = read_distributed_env();
  const at::Device device = rank_device(recipe.get_string("device"), env);
  if (recipe.get_int("threads") > 0) at::set_num_threads(static_cast<int>(recipe.get_int("threads")));

  PretrainConfig config;
  config.model = make_byte_model_config(
      recipe.get_int("model.hidden_size"), recipe.get_int("model.intermediate_size"),
      recipe.get_int("model.num_layers"), recipe.get_int("model.num_heads"), recipe.get_int("model.num_kv_heads"),
      recipe.get_int("model.max_position_embeddings"), recipe.get_double("model.rope_theta"));
  config.init_seed = static_cast<uint64_t>(recipe.get_int("model.init_seed"));
  config.data = recipe_task_mixture(recipe);
  config.data.loss_on_prompt = recipe.get_bool("data.loss_on_prompt");
  if (config.data.max_tokens > config.model.max_position_embeddings)
    fail_input("recipe", "data.max_tokens", "exceeds model.max_position_embeddings");
  config.batch_size = recipe.get_int("train.batch_size");
  if (config.batch_size < 1) fail_input("recipe", "train.batch_size", "expected >= 1");

  LoopConfig& loop = config.loop;
  loop.steps = recipe.get_int("train.steps");
  loop.micro_batches = recipe.get_int("train.micro_batches");
  loop.max_grad_norm = recipe.get_double("train.max_grad_norm");
  loop.schedule.kind = recipe.get_string("train.schedule");
  if (loop.schedule.kind != "cosine" && loop.schedule.kind != "constant")
    fail_input("recipe", "train.schedule", "expected cosine or constant");
  loop.schedule.peak_lr = recipe.get_double("train.lr");
  loop.schedule.warmup_steps = recipe.get_int("train.warmup_steps");
  loop.schedule.min_lr_ratio = recipe.get_double("train.min_lr_ratio");
  loop.schedule.total_steps = loop.steps;
  loop.optimizer.name = recipe.get_string("train.optimizer");
  loop.optimizer.weight_decay = recipe.get_double("train.weight_decay");
  loop.optimizer.beta1 = recipe.get_double("train.beta1");
  loop.optimizer.beta2 = recipe.get_double("train.beta2");
  loop.optimizer.momentum = recipe.get_double("train.momentum");
  const std::string bf16 = recipe.get_string("train.bf16");
  loop.bf16_autocast = bf16 == "auto" ? device.is_cuda() : recipe.get_bool("train.bf16");
  loop.log_every = recipe.get_int("train.log_every");
  loop.checkpoint_every = recipe.get_int("train.checkpoint_every");
  loop.time_phases = recipe.get_bool("train.time_phases");
  loop.keep_checkpoints = recipe.get_int("train.keep_checkpoints");
  loop.out_dir = recipe.get_string("out");
  loop.resume = args.resume;
  loop.recipe_text = recipe.to_yaml();
  config.device = device;
  config.out_dir = loop.out_dir;
  config.export_dtype = parse_dtype_name(recipe.get_string("export.dtype"), "recipe", "export.dtype");
  config.max_shard_bytes = recipe.get_int("export.max_shard_mb") << 20;
  config.eval.tasks = recipe.get_string_list("eval.tasks");
  config.eval.lengths = recipe.get_int_list("eval.lengths");
  config.eval.samples = recipe.get_int("eval.samples");

  // Bad input gives one error line before anything is printed or written.
  validate(config);
  validate(loop, env.world_size);
  check_output_folder(config.out_dir, recipe.origin("out"), "out");
  DataParallel parallel(env, device, env.timeout);
  if (parallel.is_main()) {
    start_run_folder(recipe, config.out_dir);
    std::cout << "pretraining a " << config.model.num_layers << "-layer model (hidden " << config.model.hidden_size
              << ", " << config.model.num_heads << " heads, " << config.model.num_kv_heads << " KV heads) on "
              << device.str() << ", " << parallel.world_size() << " rank(s) -> " << config.out_dir << std::endl;
  }
  PretrainResult result = run_pretrain(config, parallel.world_size() > 1 ? &parallel : nullptr);
  if (!parallel.is_main()) return;
  std::cout << std::fixed << std::setprecision(1) << "trained " << result.records.size() << " steps in "
            << result.train_seconds << " s (" << std::setprecision(0) << result.tokens_per_second
            << " tokens/s); final loss " << std::setprecision(4)
            << (result.records.empty() ? 0.0 : result.records.back().loss) << "\nmodel: " << result.model_dir << "\n";
  if (!result.accuracy.empty()) {
    const std::string table = accuracy_table(result.accuracy);
    write_text_atomically(config.out_dir + "/accuracy.md", table);
    std::cout << table;
  }
}

}  // namespace

void add_pretrain_command(CLI::App& app) {
  auto args = std::make_shared<PretrainArgs>();
  CLI::App* command = app.add_subcommand("pretrain", "Pretrain a built-in base model on the synthetic task mixture");
  command->add_option("args", args->positional, "RECIPE.yaml [key=value ...]");
  command->add_flag("--resume", args->resume, "continue from the newest checkpoint in `out`");
  command->callback([args] { run_pretrain_command(*args); });
}

}  // namespace kvforge
