// kvforge generate: prompts (text or token ids) in; text, token ids or logits out.
#include <torch/cuda.h>

#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/device_choice.h"
#include "cli/recipe.h"
#include "cli/token_ids.h"
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
      {"print", "text",
       "text | ids (JSON: prompt and generated ids) | logits (JSON: the prompt's logits at every position, "
       "[tokens × vocab] per prompt, nothing generated)"},
      {"beyond_context", "false", "allow prompt + new tokens past the model's positions (RoPE extrapolates)"},
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
  std::vector<std::string> ids;  // each "1,2,3": one sequence of token ids
  int64_t max_new_tokens = 0;
  const CLI::Option* max_new_tokens_flag = nullptr;  // given: its value reaches the check, negative too
  std::string print;
  std::string device;
};

// Prompt plus new tokens must fit the positions the model is made for, checked before any work. The errors name
// `prompt_field` (prompts or --ids) and max_new_tokens, from where `recipe` says each came.
void check_positions(const std::vector<std::vector<int64_t>>& prompts, int64_t new_tokens, const ModelConfig& config,
                     const Recipe& recipe, const std::string& prompt_field) {
  const int64_t limit = usable_positions(config);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto length = static_cast<int64_t>(prompts[i].size());
    const std::string which = prompts.size() > 1 ? "prompt " + std::to_string(i) : "the prompt";
    if (length >= limit)
      fail_input(prompt_field == "prompts" ? recipe.origin("prompts") : "command line", prompt_field,
                 which + " is " + std::to_string(length) + " tokens; the model has " + usable_positions_text(config) +
                     ", so no token fits after it (beyond_context=true runs it anyway)");
    if (length + new_tokens > limit)
      fail_input(recipe.origin("max_new_tokens"), "max_new_tokens",
                 which + " (" + std::to_string(length) + " tokens) + " + std::to_string(new_tokens) +
                     " new tokens exceeds the model's " + usable_positions_text(config) + "; at most " +
                     std::to_string(limit - length) + " new tokens fit (beyond_context=true runs it anyway)");
  }
}

// The prompts' logits, one forward each (no cache, positions 0..n-1), as transformers' model(ids).logits gives them.
nlohmann::json prompt_logits(Transformer& model, const std::vector<std::vector<int64_t>>& prompts) {
  torch::NoGradGuard no_grad;
  const at::Device device = model->output_weight().device();
  nlohmann::json sequences = nlohmann::json::array();
  for (const std::vector<int64_t>& prompt : prompts) {
    const auto length = static_cast<int64_t>(prompt.size());
    const at::Tensor ids = at::tensor(prompt, at::kLong).unsqueeze(0).to(device);
    const at::Tensor positions = at::arange(length, at::kLong).unsqueeze(0).to(device);
    // logits: [tokens, vocab]
    const at::Tensor logits = model->forward(ids, positions)[0].to(at::kCPU, at::kFloat).contiguous();
    nlohmann::json rows = nlohmann::json::array();
    const float* data = logits.data_ptr<float>();
    for (int64_t t = 0; t < length; ++t)
      rows.push_back(std::vector<float>(data + t * logits.size(1), data + (t + 1) * logits.size(1)));
    sequences.push_back({{"prompt_ids", prompt}, {"logits", std::move(rows)}});
  }
  return sequences;
}

void run_generate(const GenerateArgs& args) {
  Recipe recipe(generate_schema());
  recipe.apply_arguments(args.positional);
  if (!args.model.empty()) recipe.set("model", YAML::Node(args.model), "--model");
  if (!args.prompts.empty()) recipe.set("prompts", YAML::Node(args.prompts), "--prompt");
  if (args.max_new_tokens_flag->count() > 0)
    recipe.set("max_new_tokens", YAML::Node(args.max_new_tokens), "--max-new-tokens");
  if (!args.print.empty()) recipe.set("print", YAML::Node(args.print), "--print");
  if (!args.device.empty()) recipe.set("device", YAML::Node(args.device), "--device");

  // Every input is checked before the model loads where it can be.
  const std::string print = recipe.get_string("print");
  if (print != "text" && print != "ids" && print != "logits")
    fail_input(recipe.origin("print"), "print", "expected text, ids or logits, got '" + print + "'");
  const int64_t max_new_tokens = recipe.get_int("max_new_tokens");
  if (max_new_tokens < 1)
    fail_input(recipe.origin("max_new_tokens"), "max_new_tokens",
               "expected >= 1, got " + std::to_string(max_new_tokens));
  const bool text_prompts = recipe.has("prompts");
  if (text_prompts && !args.ids.empty())
    fail_input("command line", "--ids", "give prompts as text (--prompt) or as token ids (--ids), not both");
  if (!text_prompts && args.ids.empty())
    fail_input("command line", "prompts", "missing: pass --prompt TEXT, --ids 1,2,3 or prompts=...");
  GenerationOptions options;
  options.max_new_tokens = max_new_tokens;
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

  const at::Device device = parse_device(recipe.get_string("device"), "device");
  const at::ScalarType dtype = parse_model_dtype(recipe.get_string("dtype"), device, "dtype");
  LoadedModel loaded = load_model(recipe.get_string("model"), device, dtype);
  if (recipe.has("tokenizer")) loaded.tokenizer = Tokenizer::from_file(recipe.get_string("tokenizer"));
  // Text in or out needs the tokenizer; ids in and ids or logits out do not.
  const bool needs_tokenizer = text_prompts || print == "text" || !options.stop_strings.empty();
  if (needs_tokenizer && !loaded.tokenizer)
    fail_input(loaded.dir, "tokenizer.json", "missing; pass tokenizer=PATH, or --ids with --print ids|logits");
  options.eos_token_ids = loaded.eos_token_ids;

  std::vector<std::string> prompts;
  std::vector<std::vector<int64_t>> prompt_ids;
  if (text_prompts) {
    prompts = recipe.get_string_list("prompts");
    if (prompts.empty()) fail_input("command line", "prompts", "missing: pass --prompt TEXT or prompts=...");
    for (const std::string& prompt : prompts) {
      prompt_ids.push_back(loaded.tokenizer->encode(prompt, recipe.get_bool("add_special_tokens")));
      if (prompt_ids.back().empty()) fail_input("command line", "prompts", "a prompt encodes to no tokens");
      for (int64_t id : prompt_ids.back())
        if (id >= loaded.config.vocab_size)
          fail_input(loaded.dir, "tokenizer",
                     "produces id " + std::to_string(id) + ", beyond the model's vocab_size " +
                         std::to_string(loaded.config.vocab_size));
    }
  } else {
    for (const std::string& text : args.ids) {
      prompt_ids.push_back(parse_token_ids(text, loaded.config.vocab_size, "--ids"));
      prompts.push_back(loaded.tokenizer ? loaded.tokenizer->decode(prompt_ids.back(), false) : "");
    }
  }
  if (!recipe.get_bool("beyond_context"))
    check_positions(prompt_ids, print == "logits" ? 0 : max_new_tokens, loaded.config, recipe,
                    text_prompts ? "prompts" : "--ids");

  if (print == "logits") {
    std::cout << nlohmann::json{{"sequences", prompt_logits(loaded.model, prompt_ids)}}.dump() << "\n";
    return;
  }
  GenerationResult result =
      generate(loaded.model, prompt_ids, options, loaded.tokenizer ? &*loaded.tokenizer : nullptr);
  int64_t total_tokens = 0;
  nlohmann::json sequences = nlohmann::json::array();
  for (size_t i = 0; i < prompt_ids.size(); ++i) {
    const GeneratedSequence& sequence = result.sequences[i];
    total_tokens += static_cast<int64_t>(sequence.tokens.size());
    if (print == "ids") {
      sequences.push_back(
          {{"prompt_ids", prompt_ids[i]}, {"ids", sequence.tokens}, {"finish", to_string(sequence.finish)}});
      continue;
    }
    std::cout << "[" << i << "] " << prompts[i] << loaded.tokenizer->decode(sequence.tokens, true) << "\n"
              << "    (" << sequence.tokens.size() << " tokens, finished by " << to_string(sequence.finish) << ")\n";
  }
  if (print == "ids") std::cout << nlohmann::json{{"sequences", std::move(sequences)}}.dump() << "\n";
  const double decode_rate = result.decode_seconds > 0 ? result.decode_tokens / result.decode_seconds : 0.0;
  // With JSON on stdout the summary goes to stderr, so the output parses as it is.
  std::ostream& summary = print == "text" ? std::cout : std::cerr;
  summary << std::fixed << std::setprecision(1) << "generated " << total_tokens << " tokens for " << prompt_ids.size()
          << " prompt(s) on " << device.str() << " " << at::toString(dtype) << ": time to first token "
          << result.prefill_seconds * 1e3 << " ms, decode " << decode_rate << " tokens/s, KV cache "
          << std::setprecision(2) << result.peak_cache_bytes / 1048576.0 << " MiB\n";
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* command = app.add_subcommand("generate", "Generate text from a model (greedy or sampled, batched prompts)");
  command->add_option("args", args->positional,
                      "[RECIPE.yaml] [key=value ...]; keys: model, prompts, max_new_tokens, stop, print, "
                      "beyond_context, device, dtype, sampling.{temperature,top_k,top_p,seed}, tokenizer");
  command->add_option("--model", args->model, "model directory (same as model=DIR)");
  // One value per --prompt, so key=value arguments after it stay positional.
  command->add_option("--prompt", args->prompts, "prompt text; repeat for a batch")->allow_extra_args(false);
  command->add_option("--ids", args->ids, "a prompt as token ids, e.g. 1,2,3; repeat for a batch")
      ->allow_extra_args(false);
  args->max_new_tokens_flag =
      command->add_option("--max-new-tokens", args->max_new_tokens, "tokens to generate per prompt");
  command->add_option("--print", args->print, "text | ids | logits (same as print=...): ids and logits print JSON");
  command->add_option("--device", args->device, "auto | cpu | cuda | cuda:N");
  command->callback([args] { run_generate(*args); });
}

}  // namespace kvforge
