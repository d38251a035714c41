// kvforge eval: policies side by side on identical samples, written as report.json, report.md and plots.
#include <unistd.h>

#include <cstdio>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "cli/commands.h"
#include "cli/device_choice.h"
#include "cli/ranks.h"
#include "cli/recipe.h"
#include "eval/harness.h"
#include "policies/peer_artifacts.h"
#include "runtime/file_system.h"
#include "runtime/input_error.h"

namespace kvforge {
namespace {

std::vector<RecipeKey> eval_schema() {
  return {
      {"model", "~", "Hugging Face model directory (config.json + safetensors + tokenizer.json)"},
      {"artifacts", "[]",
       "artifact files from kvforge train (FILE or FILE:key=value,...), through their learned policy"},
      {"policies", "[full]", "policy specs, e.g. [full, \"streaming:budget=0.25\", \"snapkv:budget=0.5\"]"},
      {"tasks", "[passkey]", "synthetic tasks (eval/tasks)"},
      {"lengths", "[256]", "prompt lengths in the model's tokens"},
      {"samples", "20", "samples per task and length (the same for every policy)"},
      {"batch_size", "8", "prompts per generation batch"},
      {"seed", "1234", "sample seed"},
      {"arithmetic_steps", "2", "operations per arithmetic problem"},
      {"perplexity", "[]", "text or JSONL files to measure perplexity on under each policy"},
      {"perplexity_chunk", "64", "tokens per forward when reading a document through a cache"},
      {"answer_perplexity", "true", "also measure each cell's teacher-forced perplexity of the ideal answers"},
      {"beyond_context", "false",
       "allow prompts past the model's max_position_embeddings (RoPE extrapolates: for speed and memory, not "
       "accuracy)"},
      {"out", "runs/eval", "output folder for report.json, report.md and the SVG plots"},
      {"device", "auto", "auto | cpu | cuda | cuda:N"},
      {"dtype", "auto", "auto | float32 | bfloat16 | float16"},
  };
}

struct EvalArgs {
  std::vector<std::string> positional;
  std::string model, tasks, lengths, out, device;
  std::vector<std::string> policies, perplexity, artifacts;
  int64_t samples = 0;
  int64_t batch_size = 0;
  // Set when the flag was given: any value it carries, negative too, reaches the checks.
  const CLI::Option* samples_flag = nullptr;
  const CLI::Option* batch_size_flag = nullptr;
};

// "a,b,c" → a YAML list, so flags and recipe keys share one parser.
YAML::Node comma_list(const std::string& text) {
  YAML::Node list(YAML::NodeType::Sequence);
  std::istringstream items(text);
  for (std::string item; std::getline(items, item, ',');)
    if (!item.empty()) list.push_back(YAML::Load(item));
  return list;
}

void print_progress(int64_t done, int64_t total, const eval::CellResult& cell, bool terminal) {
  std::ostringstream line;
  line << std::fixed << std::setprecision(1) << "[" << done << "/" << total << "] " << cell.policy << " · " << cell.task
       << " @" << cell.length << ": " << 100 * cell.accuracy << "% (n=" << cell.samples << "), KV "
       << 100 * cell.kv_ratio << "%, TTFT " << cell.ttft_ms << " ms";
  if (terminal) {
    std::cerr << "\r\033[K" << line.str() << (done == total ? "\n" : "") << std::flush;
  } else {
    std::cerr << line.str() << "\n";
  }
}

void run_eval_command(const EvalArgs& args) {
  Recipe recipe(eval_schema());
  recipe.apply_arguments(args.positional);
  if (!args.model.empty()) recipe.set("model", YAML::Node(args.model), "--model");
  if (!args.policies.empty()) recipe.set("policies", YAML::Node(args.policies), "--policy");
  if (!args.artifacts.empty()) recipe.set("artifacts", YAML::Node(args.artifacts), "--artifact");
  if (!args.tasks.empty()) recipe.set("tasks", comma_list(args.tasks), "--tasks");
  if (!args.lengths.empty()) recipe.set("lengths", comma_list(args.lengths), "--lengths");
  if (args.samples_flag->count() > 0) recipe.set("samples", YAML::Node(args.samples), "--samples");
  if (args.batch_size_flag->count() > 0) recipe.set("batch_size", YAML::Node(args.batch_size), "--batch-size");
  if (!args.perplexity.empty()) recipe.set("perplexity", YAML::Node(args.perplexity), "--perplexity");
  if (!args.out.empty()) recipe.set("out", YAML::Node(args.out), "--out");
  if (!args.device.empty()) recipe.set("device", YAML::Node(args.device), "--device");

  eval::EvalOptions options;
  for (const std::string& text : recipe.get_string_list("policies")) options.policies.push_back(parse_policy(text));
  options.tasks = recipe.get_string_list("tasks");
  options.lengths = recipe.get_int_list("lengths");
  options.samples = recipe.get_int("samples");
  options.batch_size = recipe.get_int("batch_size");
  options.seed = static_cast<uint64_t>(recipe.get_int("seed"));
  options.arithmetic_steps = recipe.get_int("arithmetic_steps");
  options.perplexity_files = recipe.get_string_list("perplexity");
  options.perplexity_chunk = recipe.get_int("perplexity_chunk");
  options.answer_perplexity = recipe.get_bool("answer_perplexity");
  options.beyond_context = recipe.get_bool("beyond_context");
  if (options.perplexity_chunk < 1) fail_input("command line", "perplexity_chunk", "expected >= 1");
  // The report's folder is checked before the model loads, not found unusable after the whole evaluation.
  const std::string out = recipe.get_string("out");
  check_output_folder(out, recipe.origin("out"), "out");

  Ranks ranks = recipe_ranks(recipe);  // under torchrun each rank runs its share of every cell's batches
  const at::Device device = ranks.device;
  const at::ScalarType dtype = parse_model_dtype(recipe.get_string("dtype"), device, "dtype");
  LoadedModel loaded = load_model(recipe.get_string("model"), device, dtype);
  for (const std::string& entry : recipe.get_string_list("artifacts")) {
    // FILE or FILE:key=value,... (e.g. prefixkv.safetensors:budget=0.3 picks one calibrated budget)
    const size_t colon = entry.rfind(':');
    const bool has_selection = colon != std::string::npos && entry.find('=', colon) != std::string::npos;
    const std::string path = has_selection ? entry.substr(0, colon) : entry;
    // A peer's file (DuoAttention's or RLKV's TSV, PrefixKV's budget JSON) carries no fingerprint: its shape is
    // checked against the model as it is read.
    const bool peer = is_peer_artifact(path);
    auto artifact =
        std::make_shared<const Artifact>(peer ? read_peer_artifact(path, loaded.config) : read_artifact(path));
    if (!peer) check_artifact_matches(*artifact, loaded.config, loaded.dir);
    for (PolicySpec& spec : policies_from_artifact(artifact, has_selection ? entry.substr(colon + 1) : "")) {
      for (const PolicySpec& other : options.policies)
        if (other.label == spec.label) spec.label += " (" + path + ")";  // two artifacts, same settings
      options.policies.push_back(std::move(spec));
    }
  }
  eval::validate(options, loaded);

  const bool terminal = isatty(fileno(stderr)) != 0;
  const bool main_rank = ranks.is_main();
  if (main_rank)
    std::cerr << "eval " << loaded.dir << " on " << device.str() << " (" << ranks.parallel.world_size()
              << " rank(s)): " << options.tasks.size() << " task(s) × " << options.lengths.size() << " length(s) × "
              << options.samples << " samples" << std::endl;
  eval::EvalReport report = eval::run_eval(
      loaded, options,
      [terminal, main_rank](int64_t done, int64_t total, const eval::CellResult& cell) {
        if (main_rank) print_progress(done, total, cell, terminal);
      },
      ranks.group());
  if (!main_rank) return;
  eval::WrittenReport written = eval::write_report(report, out);
  std::cout << eval::plain_text(eval::report_markdown(report)) << "\nreport: " << out << "/report.md (also";
  for (size_t i = 1; i < written.files.size(); ++i) std::cout << " " << written.files[i];
  std::cout << ")\n";
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  CLI::App* command = app.add_subcommand(
      "eval", "Measure policies side by side on the synthetic tasks: accuracy, KV bytes, TTFT, decode speed");
  command->add_option("args", args->positional, "[RECIPE.yaml] [key=value ...]");
  command->add_option("--model", args->model, "model directory");
  command->add_option("--policy", args->policies, "policy spec; repeat to compare (full is always measured)")
      ->allow_extra_args(false);
  command->add_option("--artifact", args->artifacts, "FILE[:key=value,...] from kvforge train; repeatable")
      ->allow_extra_args(false);
  command->add_option("--tasks", args->tasks, "comma-separated tasks, e.g. passkey,niah_single");
  command->add_option("--lengths", args->lengths, "comma-separated prompt lengths in tokens");
  args->samples_flag = command->add_option("--samples", args->samples, "samples per task and length");
  args->batch_size_flag = command->add_option("--batch-size", args->batch_size, "prompts per generation batch");
  command->add_option("--perplexity", args->perplexity, "text or JSONL file; repeatable")->allow_extra_args(false);
  command->add_option("--out", args->out, "output folder (report.json, report.md, plots)");
  command->add_option("--device", args->device, "auto | cpu | cuda | cuda:N");
  command->footer("Policies:\n" + policy_catalogue());
  command->callback([args] { run_eval_command(*args); });
}

}  // namespace kvforge
