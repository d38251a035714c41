#include "policies/peer_artifacts.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "policies/heads.h"
#include "policies/prefixkv.h"
#include "runtime/input_error.h"
#include "runtime/json_file.h"

namespace kvforge {
namespace {

// [layers, kv_heads] of tab-separated numbers, as np.savetxt writes them and np.loadtxt reads them.
at::Tensor read_gate_rows(const std::string& path, const ModelConfig& config) {
  std::ifstream file(path);
  if (!file) fail_input(path, "file", "cannot be read");
  std::vector<double> values;
  int64_t rows = 0;
  for (std::string line; std::getline(file, line);) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    ++rows;
    std::istringstream cells(line);
    int64_t count = 0;
    for (std::string cell; std::getline(cells, cell, '\t');) {
      try {
        size_t used = 0;
        values.push_back(std::stod(cell, &used));
        if (cell.find_first_not_of(" \r", used) != std::string::npos) throw std::invalid_argument(cell);
      } catch (const std::exception&) {
        fail_input(path, "line " + std::to_string(rows), "expected tab-separated numbers, got '" + cell + "'");
      }
      ++count;
    }
    if (count != config.num_kv_heads)
      fail_input(path, "line " + std::to_string(rows),
                 "expected " + std::to_string(config.num_kv_heads) + " gates (the model's KV heads), got " +
                     std::to_string(count));
  }
  if (rows != config.num_layers)
    fail_input(path, "rows",
               "expected " + std::to_string(config.num_layers) + " (the model's layers), got " + std::to_string(rows));
  return at::tensor(values, at::kDouble).view({rows, config.num_kv_heads}).to(at::kFloat);
}

// DuoAttention writes its deployment window beside the gates; kvforge's head policies read it as their default.
void read_duo_window(const std::filesystem::path& config_path, Artifact& artifact) {
  if (!std::filesystem::exists(config_path)) return;
  const nlohmann::json config = read_json_file(config_path.string());
  struct Field {
    const char* key;
    const char* metric;
    int64_t minimum;  // a streaming head keeps at least its newest token; it may keep no sink
  };
  for (const Field& field : {Field{"sink_size", "deploy_sink", 0}, Field{"recent_size", "deploy_recent", 1}}) {
    const auto& [key, metric, minimum] = field;
    if (!config.is_object() || !config.contains(key)) continue;
    const nlohmann::json& value = config.at(key);
    if (!value.is_number_integer() || value.get<int64_t>() < minimum)
      fail_input(config_path.string(), key, "expected an integer of at least " + std::to_string(minimum));
    artifact.metrics[metric] = static_cast<double>(value.get<int64_t>());
  }
}

Artifact read_prefixkv_budgets(const std::string& path, const ModelConfig& config) {
  const nlohmann::json list = read_json_file(path);
  if (!list.is_array() || static_cast<int64_t>(list.size()) != config.num_layers)
    fail_input(path, "",
               "expected a list of " + std::to_string(config.num_layers) +
                   " evicted fractions (one per layer of the model), as PrefixKV's confs/*.json hold");
  std::vector<double> retained;
  double evicted_sum = 0;
  for (size_t layer = 0; layer < list.size(); ++layer) {
    const nlohmann::json& value = list[layer];
    if (!value.is_number() || value.get<double>() < 0 || value.get<double>() >= 1)
      fail_input(path, "[" + std::to_string(layer) + "]", "expected a fraction in [0, 1), got " + value.dump());
    evicted_sum += value.get<double>();
    retained.push_back(1 - value.get<double>());
  }
  // PrefixKV names each file by the ratio its search aimed at; the layers' mean only approximates it (0.499 for 0.5).
  double budget = 1 - evicted_sum / static_cast<double>(list.size());
  std::smatch ratio;
  const std::string name = std::filesystem::path(path).filename().string();
  if (std::regex_search(name, ratio, std::regex(R"(_(0?\.[0-9]+)\.json$)"))) budget = 1 - std::stod(ratio[1].str());
  Artifact artifact;
  artifact.path = path;
  artifact.method = kPrefixKvMethod;
  artifact.model = ModelFingerprint::of(config);
  artifact.tensors["budgets"] = at::tensor(std::vector<double>{budget}, at::kDouble);
  artifact.tensors["retained_fraction"] = at::tensor(retained, at::kDouble).view({1, config.num_layers});
  return artifact;
}

// The shortest decimal that reads back as `value` rounded to 1e-9, as Python's str() prints a ratio like 0.2.
std::string short_decimal(double value) {
  const double rounded = std::round(value * 1e9) / 1e9;
  for (int digits = 1; digits < 17; ++digits) {
    std::ostringstream text;
    text.precision(digits);
    text << rounded;
    if (std::stod(text.str()) == rounded) return text.str();
  }
  return std::to_string(rounded);
}

}  // namespace

bool is_peer_artifact(const std::string& path) {
  const std::filesystem::path extension = std::filesystem::path(path).extension();
  return extension == ".tsv" || extension == ".json";
}

Artifact read_peer_artifact(const std::string& path, const ModelConfig& config) {
  const std::filesystem::path file(path);
  if (file.extension() == ".json") return read_prefixkv_budgets(path, config);
  Artifact artifact;
  artifact.path = path;
  artifact.model = ModelFingerprint::of(config);
  artifact.tensors["gates"] = read_gate_rows(path, config);
  if (file.filename() == "adapter_weights.tsv") {
    artifact.method = kRlkvMethod;
  } else {
    artifact.method = kDuoMethod;
    read_duo_window(file.parent_path() / "config.json", artifact);
  }
  return artifact;
}

std::string gates_to_tsv(const at::Tensor& gates) {
  const at::Tensor values = gates.to(at::kDouble).contiguous();
  std::string out;
  char cell[32];
  for (int64_t layer = 0; layer < values.size(0); ++layer) {
    for (int64_t head = 0; head < values.size(1); ++head) {
      std::snprintf(cell, sizeof(cell), "%.18e", values[layer][head].item<double>());
      out += (head ? "\t" : "") + std::string(cell);
    }
    out += "\n";
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> prefixkv_budget_files(const Artifact& artifact,
                                                                       const std::string& model_name) {
  std::vector<std::pair<std::string, std::string>> files;
  for (double budget : prefixkv_budgets(artifact)) {
    nlohmann::json evicted = nlohmann::json::array();
    for (double retained : prefixkv_layer_fractions(artifact, budget)) evicted.push_back(1 - retained);
    files.emplace_back("prefixkv_" + model_name + "_" + short_decimal(1 - budget) + ".json", evicted.dump());
  }
  return files;
}

}  // namespace kvforge
