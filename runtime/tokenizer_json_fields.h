#pragma once
// Reading tokenizer.json values so that every failure names the file and the JSON field, e.g.
// "tokenizer.json: model.merges[12]: ...". Shared by tokenizer_json.cpp and tokenizer_json_steps.cpp.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/input_error.h"

namespace kvforge::detail {

using Json = nlohmann::json;

// Ids index dense tables, so a hostile file must not make them huge; real vocabularies stay far below.
inline constexpr int64_t kMaxTokenId = int64_t{1} << 21;
// Sequences inside Sequences; real files nest one level, a hostile one must not exhaust the stack.
inline constexpr int kMaxNesting = 8;

inline std::string json_quoted(const std::string& text) { return Json(text).dump(); }

struct Source {
  std::string name;
  [[noreturn]] void fail(const std::string& field, const std::string& problem) const {
    fail_input(name, field, problem);
  }
};

inline const Json* find_key(const Json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

inline const Json& require_object(const Json& value, const std::string& field, const Source& source) {
  if (!value.is_object()) source.fail(field, std::string("expected an object, got ") + value.type_name());
  return value;
}

inline const Json& require_key(const Json& object, const char* key, const std::string& field, const Source& source) {
  const Json* value = find_key(object, key);
  if (value == nullptr) source.fail(field + "." + key, "is missing");
  return *value;
}

inline std::string read_string(const Json& value, const std::string& field, const Source& source) {
  if (!value.is_string()) source.fail(field, std::string("expected a string, got ") + value.type_name());
  return value.get<std::string>();
}

inline bool read_bool(const Json& object, const char* key, bool fallback, const std::string& field,
                      const Source& source) {
  const Json* value = find_key(object, key);
  if (value == nullptr || value->is_null()) return fallback;
  if (!value->is_boolean())
    source.fail(field + "." + key, std::string("expected true or false, got ") + value->type_name());
  return value->get<bool>();
}

inline int32_t read_id(const Json& value, const std::string& field, const Source& source) {
  if (!value.is_number_integer()) source.fail(field, std::string("expected an integer id, got ") + value.type_name());
  const int64_t id = value.get<int64_t>();
  if (id < 0 || id >= kMaxTokenId) {
    source.fail(field, "id " + std::to_string(id) + " is outside [0, " + std::to_string(kMaxTokenId) + ")");
  }
  return static_cast<int32_t>(id);
}

inline std::string read_type(const Json& object, const std::string& field, const Source& source) {
  return read_string(require_key(require_object(object, field, source), "type", field, source), field + ".type",
                     source);
}

}  // namespace kvforge::detail
