// The one table of policies by name: parameters with defaults and ranges, and the function that plans.
#include <cmath>
#include <functional>
#include <sstream>

#include "policies/baselines.h"
#include "runtime/input_error.h"

namespace kvforge {
namespace {

struct Parameter {
  std::string key;
  double default_value;
  double minimum;
  double maximum;
  bool integer;
  std::string help;
};

struct PolicyEntry {
  std::string name;
  std::string summary;
  std::vector<Parameter> parameters;
  std::function<CachePlan(const PolicySpec&, const ModelConfig&, int64_t)> plan;
};

constexpr double kUnbounded = 1e12;
const Parameter kBudget{"budget", 0.5, 1e-6, kUnbounded, false, "<= 1: fraction of the prompt, > 1: tokens"};

CachePlan plan_full(const PolicySpec& spec, const ModelConfig&, int64_t) {
  return {spec.label, CacheLayout::kFull, {}, {}};
}

const std::vector<PolicyEntry>& registry() {
  static const std::vector<PolicyEntry> entries = {
      {"full", "every token (the baseline)", {}, plan_full},
      {"streaming",
       "StreamingLLM: sink + recent window",
       {kBudget,
        {"sink", 4, 0, kUnbounded, true, "first tokens always kept"},
        {"window", 0, 0, kUnbounded, true, "recent tokens; > 0 overrides budget"}},
       plan_streaming},
      {"snapkv",
       "SnapKV: per-head top-k by the prompt's last queries",
       {kBudget,
        {"window", 16, 1, kUnbounded, true, "observation window (kept too)"},
        {"kernel", 5, 1, 63, true, "odd pooling width"}},
       plan_snapkv},
      {"pyramidkv",
       "PyramidKV: SnapKV with budgets falling over layers",
       {kBudget,
        {"window", 16, 1, kUnbounded, true, "observation window"},
        {"kernel", 5, 1, 63, true, "odd pooling width"},
        {"beta", 20, 1, 1000, false, "first/last budget shape"}},
       plan_pyramidkv},
      {"h2o",
       "H2O: heavy hitters + recent window, evicting while decoding",
       {kBudget, {"recent", 0.5, 0, 1, false, "share of the budget for recent tokens"}},
       plan_h2o},
      {"kivi",
       "KIVI: 2/4-bit keys per channel, values per token",
       {{"bits", 4, 2, 4, true, "2 or 4"},
        {"group", 32, 1, 4096, true, "group size (divides head_dim)"},
        {"residual", 32, 0, kUnbounded, true, "full-precision recent tokens"}},
       plan_kivi},
  };
  return entries;
}

const PolicyEntry* find_entry(const std::string& name) {
  for (const PolicyEntry& entry : registry())
    if (entry.name == name) return &entry;
  return nullptr;
}

std::string number_text(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

double parse_number(const std::string& text, const std::string& source, const std::string& field) {
  try {
    size_t used = 0;
    const double value = std::stod(text, &used);
    if (used == text.size() && std::isfinite(value)) return value;
  } catch (const std::exception&) {
  }
  fail_input(source, field, "expected a number, got '" + text + "'");
}

}  // namespace

const std::vector<std::string>& policy_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> all;
    for (const PolicyEntry& entry : registry()) all.push_back(entry.name);
    return all;
  }();
  return names;
}

std::string policy_catalogue() {
  std::ostringstream out;
  for (const PolicyEntry& entry : registry()) {
    out << "  " << entry.name << " — " << entry.summary;
    for (const Parameter& parameter : entry.parameters)
      out << "\n      " << parameter.key << "=" << parameter.default_value << "  " << parameter.help;
    out << "\n";
  }
  return out.str();
}

PolicySpec parse_policy(const std::string& text, const std::string& source) {
  PolicySpec spec;
  spec.label = text;
  const size_t colon = text.find(':');
  spec.name = text.substr(0, colon);
  const PolicyEntry* entry = find_entry(spec.name);
  if (entry == nullptr) {
    std::string names;
    for (const std::string& name : policy_names()) names += (names.empty() ? "" : ", ") + name;
    fail_input(source, text, "unknown policy '" + spec.name + "'; expected one of " + names);
  }
  for (const Parameter& parameter : entry->parameters) spec.parameters[parameter.key] = parameter.default_value;
  if (colon == std::string::npos) return spec;
  std::istringstream items(text.substr(colon + 1));
  for (std::string item; std::getline(items, item, ',');) {
    const size_t equals = item.find('=');
    const std::string key = item.substr(0, equals);
    const Parameter* parameter = nullptr;
    for (const Parameter& candidate : entry->parameters)
      if (candidate.key == key) parameter = &candidate;
    if (parameter == nullptr || equals == std::string::npos) {
      std::string keys;
      for (const Parameter& candidate : entry->parameters) keys += (keys.empty() ? "" : ", ") + candidate.key;
      fail_input(source, text,
                 "expected key=value with a key of " + spec.name + " (" + (keys.empty() ? "none" : keys) + "), got '" +
                     item + "'");
    }
    const double value = parse_number(item.substr(equals + 1), source, text);
    const bool whole = std::floor(value) == value;
    if (value < parameter->minimum || value > parameter->maximum || (parameter->integer && !whole))
      fail_input(source, text,
                 key + ": expected " + (parameter->integer ? "an integer" : "a number") + " in [" +
                     number_text(parameter->minimum) + ", " + number_text(parameter->maximum) + "], got " +
                     item.substr(equals + 1));
    spec.parameters[key] = value;
  }
  if (spec.name == "kivi" && spec.parameters["bits"] == 3) fail_input(source, text, "bits: expected 2 or 4, got 3");
  if (spec.parameters.count("kernel") && static_cast<int64_t>(spec.parameters["kernel"]) % 2 == 0)
    fail_input(source, text, "kernel: expected an odd width");
  if (spec.parameters.count("budget") && spec.parameters["budget"] > 1 &&
      std::floor(spec.parameters["budget"]) != spec.parameters["budget"])
    fail_input(source, text, "budget: above 1 it counts tokens, so it must be whole");
  return spec;
}

PolicySpec policy_from_artifact(std::shared_ptr<const Artifact> artifact) {
  // Learned policies register here as their trainers land (RLKV heads, CSKV ranks, PrefixKV budgets,
  // Lizard layers, KV Prediction); until then every artifact is refused with the reason.
  fail_input(artifact->path, "__metadata__.kvforge.method",
             "no policy in this kvforge reads method '" + artifact->method +
                 "'; the learned policies (rlkv, cskv, prefixkv, lizard, kvpred) are not built yet");
}

CachePlan plan_cache(const PolicySpec& spec, const ModelConfig& config, int64_t prompt_tokens) {
  return find_entry(spec.name)->plan(spec, config, prompt_tokens);
}

int64_t budget_tokens(const PolicySpec& spec, int64_t prompt_tokens, int64_t minimum) {
  const double budget = spec.parameters.at("budget");
  const int64_t tokens =
      budget <= 1 ? static_cast<int64_t>(std::ceil(budget * prompt_tokens - 1e-9)) : static_cast<int64_t>(budget);
  return std::max(tokens, minimum);
}

}  // namespace kvforge
