#pragma once
// Recipes: YAML files plus dotted `key=value` overrides, checked against a schema of known keys so a
// typo is an error that suggests the nearest valid key rather than a silently ignored setting.
#include <cstdint>
#include <map>
#include <string>
#include <vector>
#include <yaml-cpp/yaml.h>

namespace kvforge {

struct RecipeKey {
  std::string path;           // dotted, e.g. "sampling.temperature"
  std::string default_value;  // YAML text; "~" for no default (required when read)
  std::string help;
};

class Recipe {
 public:
  explicit Recipe(std::vector<RecipeKey> schema);

  // Merges a YAML mapping from `path`; unknown keys and malformed YAML are InputErrors naming the file.
  void load_file(const std::string& path);
  // "a.b=value", the value parsed as YAML (so lists like [x, y] work).
  void apply_override(const std::string& assignment);
  // A command's positional arguments: an optional recipe file first, then key=value overrides.
  void apply_arguments(const std::vector<std::string>& arguments);
  // Sets a key from code (e.g. a CLI flag), with `origin` naming it in errors.
  void set(const std::string& path, const YAML::Node& value, const std::string& origin);

  bool has(const std::string& path) const;  // a non-null value is set
  // Where a key's value came from, for errors: a file path, "command line", a flag such as "--out", or "default".
  const std::string& origin(const std::string& path) const { return value_of(path).origin; }
  std::string get_string(const std::string& path) const;
  int64_t get_int(const std::string& path) const;
  double get_double(const std::string& path) const;
  bool get_bool(const std::string& path) const;
  std::vector<std::string> get_string_list(const std::string& path) const;
  std::vector<int64_t> get_int_list(const std::string& path) const;
  std::vector<double> get_double_list(const std::string& path) const;

  // The resolved recipe as YAML (nested), to save next to every output.
  std::string to_yaml() const;
  const std::vector<RecipeKey>& schema() const { return schema_; }

 private:
  struct Value {
    YAML::Node node;
    std::string origin;  // file path, "command line" or "default"
  };
  const Value& value_of(const std::string& path) const;
  void check_known(const std::string& path, const std::string& origin) const;
  void merge(const YAML::Node& node, const std::string& prefix, const std::string& origin);
  template <typename T>
  T convert(const std::string& path, const char* expected) const;

  std::vector<RecipeKey> schema_;
  std::map<std::string, Value> values_;
};

// The schema key closest to `key` by edit distance (for "did you mean" hints).
std::string nearest_key(const std::string& key, const std::vector<RecipeKey>& schema);

}  // namespace kvforge
