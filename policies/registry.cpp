// The one table of policies by name: parameters with defaults and ranges, and the function that plans.
#include <cmath>
#include <functional>
#include <sstream>

#include "policies/baselines.h"
#include "policies/cskv.h"
#include "policies/heads.h"
#include "policies/kv_prediction.h"
#include "policies/lizard.h"
#include "policies/prefixkv.h"
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
  bool reads_artifact = false;  // learned: built by policies_from_artifact, never from a bare spec
};

constexpr double kUnbounded = 1e12;
const Parameter kBudget{"budget", 0.5, 1e-6, kUnbounded, false, "<= 1: fraction of the prompt, > 1: tokens"};
const Parameter kDecodeCompression{"decode", 0, 0, 1, true,
                                   "1: hold the budget while decoding, re-scored by the newest window queries"};

// PrefixKV's eviction, shared by the calibrated budgets and the uniform ablation. The paper scores tokens by
// the attention of every prompt query; on the GPU base model that causal column sum favours early tokens so much
// that needle retrieval collapses (niah_single at 20% retained: 17% vs 82%, n=200), so the default scores with SnapKV's
// pooled observation window and window=0 keeps the paper's rule. One token set per layer (the paper's) beat letting
// each GQA KV head choose on the GPU model's retrieval (niah_single at 20%: 82% vs 74%, n=200), though not on
// the tiny model's arithmetic, so per_head=0 stays the default.
const std::vector<Parameter> kPrefixKvParameters = {
    {"sink", 4, 0, kUnbounded, true, "first tokens always kept"},
    {"window", 16, 0, kUnbounded, true, "scoring queries: the last N (SnapKV); 0: every prompt query (the paper)"},
    {"kernel", 5, 1, 63, true, "odd pooling width over scores (with window > 0)"},
    {"per_head", 0, 0, 1, true, "0: one token set per layer (the paper); 1: each KV head its own"},
    {"decode", 1, 0, 1, true, "1: keep the fraction while decoding (PrefixKV); 0: keep generated tokens (SnapKV)"},
    {"tail", 25, 0, kUnbounded, true, "decode: newest slots protected from the fixed-index eviction"},
};

// Head policies: the streaming heads' window at deployment (RLKV's 16 + 64; a learned artifact brings its own).
const std::vector<Parameter> kHeadParameters = {
    {"sparsity", 0.5, 0, 1, false, "share of KV heads that keep only sink + recent"},
    {"sink", 16, 0, kUnbounded, true, "streaming heads: first tokens kept"},
    {"recent", 64, 1, kUnbounded, true, "streaming heads: newest tokens kept"},
};

std::vector<Parameter> with_budget(const std::vector<Parameter>& parameters) {
  std::vector<Parameter> all{kBudget};
  all.insert(all.end(), parameters.begin(), parameters.end());
  return all;
}

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
        {"kernel", 5, 1, 63, true, "odd pooling width"},
        kDecodeCompression},
       plan_snapkv},
      {"pyramidkv",
       "PyramidKV: SnapKV with budgets falling over layers",
       {kBudget,
        {"window", 16, 1, kUnbounded, true, "observation window"},
        {"kernel", 5, 1, 63, true, "odd pooling width"},
        {"beta", 20, 1, 1000, false, "first/last budget shape"},
        kDecodeCompression},
       plan_pyramidkv},
      {"h2o",
       "H2O: heavy hitters + recent window, evicting while decoding",
       {kBudget, {"recent", 0.5, 0, 1, false, "share of the budget for recent tokens"}},
       plan_h2o},
      {"expected",
       "Expected Attention: what the future queries are expected to attend to (query statistics + RoPE ahead)",
       {kBudget,
        {"sink", 4, 0, kUnbounded, true, "first tokens kept, and left out of the query statistics"},
        {"future", 512, 1, 1 << 20, true, "future positions the RoPE rotation is averaged over"},
        {"covariance", 1, 0, 1, true, "1: mean and covariance of the queries; 0: the mean alone"},
        {"vnorm", 1, 0, 1, true, "1: scores times the value's norm"}},
       plan_expected_attention},
      {"tova",
       "TOVA: the tokens the newest query attends to least go, per layer, while decoding too",
       {kBudget},
       plan_tova},
      {"kivi",
       "KIVI: 2/4-bit keys per channel, values per token",
       {{"bits", 4, 2, 4, true, "2 or 4"},
        {"group", 32, 1, 4096, true, "group size (divides head_dim)"},
        {"residual", 32, 0, kUnbounded, true, "full-precision recent tokens"}},
       plan_kivi},
      {"uniform", "PrefixKV's eviction with one budget in every layer (its ablation baseline)",
       with_budget(kPrefixKvParameters), plan_uniform},
      {kPrefixKvMethod, "PrefixKV: per-layer budgets from a calibration artifact (--artifact FILE[:budget=B])",
       with_budget(kPrefixKvParameters), plan_prefixkv,
       /*reads_artifact=*/true},
      {"heads", "random streaming heads: over the model, or the same count per layer (per_layer=1)",
       [] {
         std::vector<Parameter> parameters = kHeadParameters;
         parameters.push_back({"per_layer", 0, 0, 1, true, "1: the same number of streaming heads in every layer"});
         parameters.push_back({"seed", 0, 0, kUnbounded, true, "which heads"});
         return parameters;
       }(),
       plan_random_heads},
      {kRlkvMethod, "RLKV: streaming heads by RL-learned gates (--artifact FILE[:sparsity=S])", kHeadParameters,
       plan_learned_heads,
       /*reads_artifact=*/true},
      {kDuoMethod, "DuoAttention: streaming heads by distilled gates (--artifact FILE or full_attention_heads.tsv)",
       kHeadParameters, plan_learned_heads,
       /*reads_artifact=*/true},
      {kCskvMethod,
       "CSKV: low-rank K/V latents beside an exact recent window (--artifact FILE[:bits=B,window=W])",
       {{"window", 32, 0, kUnbounded, true, "newest tokens kept exact (default: the artifact's)"},
        {"group", 32, 1, 4096, true, "key quantization group in tokens (default: the artifact's)"},
        {"bits", 16, 2, 16, true, "latent storage: 16, or 8/4/2-bit packed codes (default: the artifact's)"}},
       plan_cskv,
       /*reads_artifact=*/true},
      {kKvPredictionMethod,
       "KV Prediction: an auxiliary model predicts the prompt's cache (--artifact FILE[:alone=1])",
       {{"alone", 0, 0, 1, true, "1: the auxiliary model generates on its own (the baseline)"}},
       plan_kv_prediction,
       /*reads_artifact=*/true},
      {kLizardMethod, "Lizard / LoLCATs: linearized attention, a constant-size decode state (--artifact FILE)", {},
       plan_lizard,
       /*reads_artifact=*/true},
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

namespace {

// Fills spec.parameters from the "key=value,..." items of `items_text`, and the entry's defaults for the keys
// neither the items nor spec.parameters already hold.
void parse_parameters(const PolicyEntry& entry, const std::string& items_text, const std::string& source,
                      const std::string& text, PolicySpec& spec) {
  for (const Parameter& parameter : entry.parameters) spec.parameters.emplace(parameter.key, parameter.default_value);
  std::istringstream items(items_text);
  for (std::string item; std::getline(items, item, ',');) {
    const size_t equals = item.find('=');
    const std::string key = item.substr(0, equals);
    const Parameter* parameter = nullptr;
    for (const Parameter& candidate : entry.parameters)
      if (candidate.key == key) parameter = &candidate;
    if (parameter == nullptr || equals == std::string::npos) {
      std::string keys;
      for (const Parameter& candidate : entry.parameters) keys += (keys.empty() ? "" : ", ") + candidate.key;
      fail_input(source, text,
                 "expected key=value with a key of " + entry.name + " (" + (keys.empty() ? "none" : keys) + "), got '" +
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
}

}  // namespace

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
  if (entry->reads_artifact)
    fail_input(source, text,
               spec.name + " reads what its trainer learned: pass --artifact FILE (from kvforge train with method: " +
                   spec.name + ")");
  parse_parameters(*entry, colon == std::string::npos ? "" : text.substr(colon + 1), source, text, spec);
  return spec;
}

std::vector<PolicySpec> policies_from_artifact(std::shared_ptr<const Artifact> artifact, const std::string& selection) {
  const PolicyEntry* entry = find_entry(artifact->method);
  if (entry == nullptr || !entry->reads_artifact)
    fail_input(artifact->path, "__metadata__.kvforge.method",
               "no policy in this kvforge reads method '" + artifact->method +
                   "'; learned policies built so far: prefixkv, rlkv, duo, cskv, kvpred, lizard");
  PolicySpec spec;
  spec.name = entry->name;
  spec.artifact = artifact;
  const std::string source = "--artifact " + artifact->path;
  // The deployment window a head artifact was exported with is its default; the selection still wins.
  for (const char* key : {"sink", "recent"}) {
    auto found = artifact->metrics.find(std::string("deploy_") + key);
    if (found != artifact->metrics.end() && entry->name != kPrefixKvMethod) spec.parameters[key] = found->second;
  }
  if (entry->name == kCskvMethod) {
    // One configuration: the factors as trained, at the window, group and bits they were trained for unless the
    // selection overrides them (e.g. bits=4 on factors trained without quantization: post-training quantization).
    for (const char* key : {"window", "group", "bits"}) {
      auto found = artifact->metrics.find(key);
      if (found != artifact->metrics.end()) spec.parameters[key] = found->second;
    }
    parse_parameters(*entry, selection, source, selection, spec);
    spec.label = selection;
    cskv_low_rank_plan(spec, source);  // a malformed artifact or an unfit bits fails here, before any eval runs
    spec.label = std::string(kCskvMethod) + " (" +
                 cskv_description(*artifact, static_cast<int64_t>(spec.parameters.at("bits")),
                                  static_cast<int64_t>(spec.parameters.at("group"))) +
                 ")" + (selection.empty() ? "" : ":" + selection);
    return {spec};
  }
  if (entry->name == kLizardMethod) {
    parse_parameters(*entry, selection, source, selection, spec);
    spec.label = std::string(kLizardMethod) + " (" + lizard_description(*artifact) + ")";
    return {spec};
  }
  if (entry->name == kKvPredictionMethod) {
    // The prediction, and the auxiliary model on its own beside it unless the selection picks one.
    parse_parameters(*entry, selection, source, selection, spec);
    const std::string family = std::string(kKvPredictionMethod) + " (" + kv_prediction_description(*artifact) + ")";
    std::vector<double> modes{spec.parameters.at("alone")};
    if (selection.find("alone=") == std::string::npos) modes = {0, 1};
    std::vector<PolicySpec> specs;
    for (double alone : modes) {
      PolicySpec variant = spec;
      variant.parameters["alone"] = alone;
      variant.label = family + (alone != 0 ? ":alone=1" : "");
      specs.push_back(variant);
    }
    return specs;
  }
  parse_parameters(*entry, selection, source, selection, spec);
  // One policy per configuration the artifact stands for, unless the selection names one: a PrefixKV
  // artifact's calibrated budgets, a head artifact's usual sparsities.
  const bool prefixkv = entry->name == kPrefixKvMethod;
  if (!prefixkv) {
    auto gates = artifact->tensors.find("gates");
    const ModelFingerprint& model = artifact->model;
    if (gates == artifact->tensors.end() || gates->second.dim() != 2 || gates->second.size(0) != model.num_layers ||
        gates->second.size(1) != model.num_kv_heads)
      fail_input(artifact->path, "gates",
                 "expected a [layers, kv_heads] = [" + std::to_string(model.num_layers) + ", " +
                     std::to_string(model.num_kv_heads) + "] tensor");
  }
  const std::string varied = prefixkv ? "budget" : "sparsity";
  std::vector<double> values{spec.parameters.at(varied)};
  if (selection.find(varied + "=") == std::string::npos)
    values = prefixkv ? prefixkv_budgets(*artifact) : std::vector<double>{0.25, 0.5, 0.75};
  std::vector<PolicySpec> specs;
  for (double value : values) {
    PolicySpec variant = spec;
    variant.parameters[varied] = value;
    if (prefixkv) prefixkv_layer_fractions(*artifact, value);  // an absent budget fails here, naming the ones there are
    variant.label = spec.name + ":" + varied + "=" + number_text(value);
    std::istringstream items(selection);
    for (std::string item; std::getline(items, item, ',');)
      if (!item.empty() && item.rfind(varied + "=", 0) != 0) variant.label += "," + item;
    specs.push_back(variant);
  }
  return specs;
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
