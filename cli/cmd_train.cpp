// kvforge train RECIPE: one entry point for the method trainers, chosen by the recipe's `method` key.
#include <yaml-cpp/yaml.h>

#include <functional>
#include <map>

#include "cli/commands.h"
#include "cli/recipe.h"
#include "cli/train_cskv.h"
#include "cli/train_kvpred.h"
#include "cli/train_lizard.h"
#include "cli/train_prefixkv.h"
#include "cli/train_rlkv.h"
#include "runtime/file_system.h"
#include "runtime/input_error.h"

namespace kvforge {
namespace {

struct Method {
  std::function<std::vector<RecipeKey>()> schema;
  std::function<void(const Recipe&, bool resume)> run;
};

const std::map<std::string, Method>& methods() {
  static const std::map<std::string, Method> table = {
      {"cskv", {cskv_recipe_schema, run_cskv_recipe}},
      {"kvpred", {kvpred_recipe_schema, run_kvpred_recipe}},
      {"lizard", {lizard_recipe_schema, run_lizard_recipe}},
      {"prefixkv", {prefixkv_recipe_schema, run_prefixkv_recipe}},
      {"rlkv", {rlkv_recipe_schema, run_rlkv_recipe}},
  };
  return table;
}

// The method named by a `method=` override, else by the recipe file (the first positional argument).
std::string requested_method(const std::vector<std::string>& arguments) {
  for (const std::string& argument : arguments)
    if (argument.rfind("method=", 0) == 0) return argument.substr(7);
  if (arguments.empty() || arguments[0].find('=') != std::string::npos)
    fail_input("command line", "method", "missing: pass a recipe file with `method:` or method=NAME");
  YAML::Node root;
  try {
    root = YAML::LoadFile(arguments[0]);
  } catch (const YAML::Exception& error) {
    fail_input(arguments[0], "", std::string("cannot read the recipe: ") + error.what());
  }
  if (!root.IsMap() || !root["method"] || !root["method"].IsScalar())
    fail_input(arguments[0], "method", "missing: the recipe must name its method (e.g. method: prefixkv)");
  return root["method"].as<std::string>();
}

struct TrainArgs {
  std::vector<std::string> positional;
  bool resume = false;
};

void run_train_command(const TrainArgs& args) {
  const std::vector<std::string>& arguments = args.positional;
  const std::string name = requested_method(arguments);
  auto found = methods().find(name);
  if (found == methods().end())
    fail_input(arguments.empty() ? "command line" : arguments[0], "method",
               "expected prefixkv, rlkv, cskv, kvpred or lizard (pretrain has its own command), "
               "got '" +
                   name + "'");
  Recipe recipe(found->second.schema());
  recipe.apply_arguments(arguments);
  // A bad output folder fails here, before the model loads; the method creates it once its inputs are checked.
  check_output_folder(recipe.get_string("out"), recipe.origin("out"), "out");
  found->second.run(recipe, args.resume);
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* command =
      app.add_subcommand("train", "Train or calibrate a method's artifact from a recipe (method: prefixkv | rlkv | cskv | kvpred | lizard)");
  command->add_option("args", args->positional, "RECIPE.yaml [key=value ...]");
  command->add_flag("--resume", args->resume, "continue from the newest checkpoint in `out`");
  command->callback([args] { run_train_command(*args); });
}

}  // namespace kvforge
