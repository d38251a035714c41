// kvforge generate: prompt(s) in, text out, with timing.
#include <iomanip>
#include <iostream>
#include <torch/cuda.h>

#include "cli/commands.h"
#include "cli/device_choice.h"
#include "cli/recipe.h"
#include "runtime/generate.h"
#include "runtime/input_error.h"
#include "runtime/model_loader.h"

namespace kvforge {
namespace {

std::vector<RecipeKey> generate_schema() {
  return {
      {"model", "~", "Hugging Face model directory (config.json + safetensors)"},
      {"tokenizer", "~", "tokenizer.json to use instead of the model directory's"},
      {"prompts", "~", "prompt text, or a list of prompts generated as one batch"},
      {"max_new_tokens", "64", "tokens to generate per prompt"},
      {"add_special_tokens", "true", "apply the tokenizer's template (e.g. BOS)"},
      {"stop", "[]", "stop strings"},
      {"device", "auto", "auto | cpu | cuda | cuda:N"},
      {"dtype", "auto", "auto | float32 | bfloat16 | float16"},
      {"sampling.temperature", "0", "0 = greedy"},
      {"sampling.top_k", "0", "0 = off"},
      {"sampling.top_p", "1.0", "1 = off"},
      {"sampling.seed", "0", "sampling seed"},
  };
}

struct GenerateArgs {
  std::vector<std::string> positional;  // [recipe.yaml] key=value ...
  std::string model;
  std::vector<std::string> prompts;
  int64_t max_new_tokens = -1;
  std::string device;
};

void run_generate(const GenerateArgs& args) {
  Recipe recipe(generate_schema());
  recipe.apply_arguments(args.positional);
  if (!args.model.empty()) recipe.set("model", YAML::Node(args.model), "--model");
  if (!args.prompts.empty()) recipe.set("prompts", YAML::Node(args.prompts), "--prompt");
  if (args.max_new_tokens >= 0) recipe.set("max_new_tokens", YAML::Node(args.max_new_tokens), "--max-new-tokens");
  if (!args.device.empty()) recipe.set("device", YAML::Node(args.device), "--device");

  const at::Device device = parse_device(recipe.get_string("device"), "device");
  const at::ScalarType dtype = parse_model_dtype(recipe.get_string("dtype"), device, "dtype");
  LoadedModel loaded = load_model(recipe.get_string("model"), device, dtype);
  if (recipe.has("tokenizer")) loaded.tokenizer = Tokenizer::from_file(recipe.get_string("tokenizer"));
  if (!loaded.tokenizer)
    fail_input(loaded.dir, "tokenizer.json", "missing; pass tokenizer=PATH to use another tokenizer.json");

  const std::vector<std::string> prompts = recipe.get_string_list("prompts");
  if (prompts.empty()) fail_input("command line", "prompts", "missing: pass --prompt TEXT or prompts=...");
  std::vector<std::vector<int64_t>> prompt_ids;
  for (const std::string& prompt : prompts) {
    prompt_ids.push_back(loaded.tokenizer->encode(prompt, recipe.get_bool("add_special_tokens")));
    if (prompt_ids.back().empty()) fail_input("command line", "prompts", "a prompt encodes to no tokens");
    for (int64_t id : prompt_ids.back())
      if (id >= loaded.config.vocab_size)
        fail_input(loaded.dir, "tokenizer", "produces id " + std::to_string(id) + ", beyond the model's vocab_size " +
                                                std::to_string(loaded.config.vocab_size));
  }

  GenerationOptions options;
  options.max_new_tokens = recipe.get_int("max_new_tokens");
  if (options.max_new_tokens < 1) fail_input("recipe", "max_new_tokens", "expected >= 1");
  options.eos_token_ids = loaded.eos_token_ids;
  options.stop_strings = recipe.get_string_list("stop");
  options.sampling.temperature = recipe.get_double("sampling.temperature");
  options.sampling.top_k = recipe.get_int("sampling.top_k");
  options.sampling.top_p = recipe.get_double("sampling.top_p");
  options.sampling.seed = static_cast<uint64_t>(recipe.get_int("sampling.seed"));
  try {
    validate(options.sampling);
  } catch (const std::invalid_argument& e) {
    fail_input("recipe", "sampling", e.what());
  }

  GenerationResult result = generate(loaded.model, prompt_ids, options, &*loaded.tokenizer);
  int64_t total_tokens = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const GeneratedSequence& sequence = result.sequences[i];
    total_tokens += static_cast<int64_t>(sequence.tokens.size());
    std::cout << "[" << i << "] " << prompts[i] << loaded.tokenizer->decode(sequence.tokens, true) << "\n"
              << "    (" << sequence.tokens.size() << " tokens, finished by " << to_string(sequence.finish) << ")\n";
  }
  const double decode_rate = result.decode_seconds > 0 ? result.decode_tokens / result.decode_seconds : 0.0;
  std::cout << std::fixed << std::setprecision(1) << "generated " << total_tokens << " tokens for " << prompts.size()
            << " prompt(s) on " << device.str() << " " << at::toString(dtype) << ": time to first token "
            << result.prefill_seconds * 1e3 << " ms, decode " << decode_rate << " tokens/s, KV cache "
            << std::setprecision(2) << result.peak_cache_bytes / 1048576.0 << " MiB\n";
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* command = app.add_subcommand("generate", "Generate text from a model (greedy or sampled, batched prompts)");
  command->add_option("args", args->positional, "[RECIPE.yaml] [key=value ...]; keys: model, prompts, max_new_tokens, "
                                                "stop, device, dtype, sampling.{temperature,top_k,top_p,seed}, tokenizer");
  command->add_option("--model", args->model, "model directory (same as model=DIR)");
  // One value per --prompt, so key=value arguments after it stay positional.
  command->add_option("--prompt", args->prompts, "prompt text; repeat for a batch")->allow_extra_args(false);
  command->add_option("--max-new-tokens", args->max_new_tokens, "tokens to generate per prompt");
  command->add_option("--device", args->device, "auto | cpu | cuda | cuda:N");
  command->callback([args] { run_generate(*args); });
}

}  // namespace kvforge
