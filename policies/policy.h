#pragma once
// Policies by name: a spec string "name[:key=value,...]" (e.g. "snapkv:budget=0.25,window=16") becomes a
// PolicySpec with every parameter filled in, and a PolicySpec plus a model and a prompt length becomes a
// CachePlan. The training-free baselines live in baselines.h; the table of names is registry.cpp.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "checkpoints/artifact.h"
#include "policies/cache_plan.h"
#include "runtime/model_config.h"

namespace kvforge {

struct PolicySpec {
  std::string label;  // the spec as given, used in reports
  std::string name;
  std::map<std::string, double> parameters;  // given values over the policy's defaults
  std::shared_ptr<const Artifact> artifact;  // learned policies: what the trainer exported
};

// Throws InputError naming `source` (e.g. "--policy") for an unknown policy or parameter, or a value out of
// range, listing what is valid.
PolicySpec parse_policy(const std::string& text, const std::string& source = "--policy");

// The learned policies that read `artifact` (already checked against the model), by its kvforge.method: one
// per configuration the artifact holds (a PrefixKV artifact calibrated for three budgets gives three), or the
// one `selection` picks ("budget=0.3", with any other parameters of the policy as in a spec). An artifact whose
// method no policy reads is an InputError naming the file and the method.
std::vector<PolicySpec> policies_from_artifact(std::shared_ptr<const Artifact> artifact,
                                               const std::string& selection = "");

CachePlan plan_cache(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens);

const std::vector<std::string>& policy_names();
// One line per policy with its parameters and defaults, for --help and errors.
std::string policy_catalogue();

// `budget` as tokens for a prompt: a value <= 1 is a fraction of prompt_tokens (rounded up), above 1 a
// token count; at least `minimum`.
int64_t budget_tokens(const PolicySpec& spec, int64_t prompt_tokens, int64_t minimum = 1);

}  // namespace kvforge
