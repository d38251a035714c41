#include "cli/recipe.h"

#include <algorithm>

#include "runtime/input_error.h"
#include "runtime/json_file.h"

namespace kvforge {
namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> previous(b.size() + 1), current(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(previous, current);
  }
  return previous[b.size()];
}

std::string last_component(const std::string& path) {
  size_t dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

// Sets node[a][b][c] = value for parts {a, b, c}; each child is re-assigned to its parent after it is
// filled, because yaml-cpp does not attach a node created by operator[] until it is assigned.
void assign_nested(YAML::Node node, const std::vector<std::string>& parts, size_t index, const YAML::Node& value) {
  if (index + 1 == parts.size()) {
    node[parts[index]] = value;
    return;
  }
  YAML::Node child = node[parts[index]];
  if (!child.IsMap()) child = YAML::Node(YAML::NodeType::Map);
  assign_nested(child, parts, index + 1, value);
  node[parts[index]] = child;
}

}  // namespace

std::string nearest_key(const std::string& key, const std::vector<RecipeKey>& schema) {
  std::string best;
  size_t best_distance = std::string::npos;
  for (const RecipeKey& candidate : schema) {
    // A misplaced section ("temperature" for "sampling.temperature") counts as close too.
    size_t distance = std::min(edit_distance(key, candidate.path),
                               edit_distance(last_component(key), last_component(candidate.path)) + 1);
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate.path;
    }
  }
  return best;
}

Recipe::Recipe(std::vector<RecipeKey> schema) : schema_(std::move(schema)) {
  for (const RecipeKey& key : schema_) values_[key.path] = {YAML::Load(key.default_value), "default"};
}

void Recipe::check_known(const std::string& path, const std::string& origin) const {
  if (values_.count(path)) return;
  fail_input(origin, path, "unknown key; did you mean '" + nearest_key(path, schema_) + "'?");
}

void Recipe::merge(const YAML::Node& node, const std::string& prefix, const std::string& origin) {
  for (const auto& item : node) {
    const std::string key = item.first.as<std::string>();
    const std::string path = prefix.empty() ? key : prefix + "." + key;
    if (item.second.IsMap() && !values_.count(path)) {
      merge(item.second, path, origin);
      continue;
    }
    set(path, item.second, origin);
  }
}

void Recipe::load_file(const std::string& path) {
  const std::string text = read_text_file(path);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail_input(path, "line " + std::to_string(e.mark.line + 1), "malformed YAML: " + e.msg);
  }
  if (root.IsNull()) return;
  if (!root.IsMap()) fail_input(path, "", "expected a YAML mapping of recipe keys");
  merge(root, "", path);
}

void Recipe::apply_override(const std::string& assignment) {
  const size_t equals = assignment.find('=');
  if (equals == std::string::npos || equals == 0) fail_input("command line", assignment, "expected key=value");
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(equals + 1));
  } catch (const YAML::Exception& e) {
    fail_input("command line", assignment.substr(0, equals), "value is not valid YAML: " + e.msg);
  }
  set(assignment.substr(0, equals), value, "command line");
}

void Recipe::apply_arguments(const std::vector<std::string>& arguments) {
  for (size_t i = 0; i < arguments.size(); ++i) {
    const std::string& argument = arguments[i];
    if (argument.find('=') != std::string::npos) {
      apply_override(argument);
    } else if (i == 0) {
      load_file(argument);
    } else {
      fail_input("command line", argument, "expected key=value (only the first argument may be a recipe file)");
    }
  }
}

void Recipe::set(const std::string& path, const YAML::Node& value, const std::string& origin) {
  check_known(path, origin);
  values_[path] = {YAML::Clone(value), origin};
}

bool Recipe::has(const std::string& path) const { return !value_of(path).node.IsNull(); }

const Recipe::Value& Recipe::value_of(const std::string& path) const {
  auto it = values_.find(path);
  if (it == values_.end()) throw std::logic_error("recipe key not in schema: " + path);
  return it->second;
}

template <typename T>
T Recipe::convert(const std::string& path, const char* expected) const {
  const Value& value = value_of(path);
  if (value.node.IsNull()) fail_input(value.origin, path, std::string("missing (required): expected ") + expected);
  try {
    if (!value.node.IsScalar()) throw YAML::Exception(YAML::Mark::null_mark(), "not a scalar");
    return value.node.as<T>();
  } catch (const YAML::Exception&) {
    fail_input(value.origin, path, std::string("expected ") + expected + ", got '" + YAML::Dump(value.node) + "'");
  }
}

std::string Recipe::get_string(const std::string& path) const { return convert<std::string>(path, "a string"); }
int64_t Recipe::get_int(const std::string& path) const { return convert<int64_t>(path, "an integer"); }
double Recipe::get_double(const std::string& path) const { return convert<double>(path, "a number"); }
bool Recipe::get_bool(const std::string& path) const { return convert<bool>(path, "true or false"); }

std::vector<std::string> Recipe::get_string_list(const std::string& path) const {
  const Value& value = value_of(path);
  if (value.node.IsNull()) return {};
  if (value.node.IsScalar()) return {value.node.as<std::string>()};
  std::vector<std::string> out;
  if (value.node.IsSequence()) {
    for (const auto& item : value.node) {
      if (!item.IsScalar()) fail_input(value.origin, path, "expected a list of strings");
      out.push_back(item.as<std::string>());
    }
    return out;
  }
  fail_input(value.origin, path, "expected a string or a list of strings");
}

std::vector<int64_t> Recipe::get_int_list(const std::string& path) const {
  std::vector<int64_t> values;
  for (const std::string& text : get_string_list(path)) {
    try {
      size_t used = 0;
      values.push_back(std::stoll(text, &used));
      if (used != text.size()) throw std::invalid_argument(text);
    } catch (const std::exception&) {
      fail_input(value_of(path).origin, path, "expected a list of integers, got '" + text + "'");
    }
  }
  return values;
}

std::vector<double> Recipe::get_double_list(const std::string& path) const {
  std::vector<double> values;
  for (const std::string& text : get_string_list(path)) {
    try {
      size_t used = 0;
      values.push_back(std::stod(text, &used));
      if (used != text.size()) throw std::invalid_argument(text);
    } catch (const std::exception&) {
      fail_input(value_of(path).origin, path, "expected a list of numbers, got '" + text + "'");
    }
  }
  return values;
}

std::string Recipe::to_yaml() const {
  YAML::Node root(YAML::NodeType::Map);
  for (const RecipeKey& key : schema_) {
    std::vector<std::string> parts;
    size_t start = 0;
    for (size_t dot; (dot = key.path.find('.', start)) != std::string::npos; start = dot + 1)
      parts.push_back(key.path.substr(start, dot - start));
    parts.push_back(key.path.substr(start));
    assign_nested(root, parts, 0, values_.at(key.path).node);
  }
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

}  // namespace kvforge
