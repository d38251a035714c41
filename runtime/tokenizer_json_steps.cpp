#include "runtime/tokenizer_json_steps.h"

#include <utility>

#include "runtime/byte_level.h"

namespace kvforge::detail {
namespace {

void check_depth(int depth, const std::string& field, const Source& source) {
  if (depth > kMaxNesting) source.fail(field, "Sequences nest deeper than " + std::to_string(kMaxNesting));
}

// The items of a Sequence's list (e.g. "normalizers"), each with its field name.
template <typename ReadItem>
void read_sequence(const Json& json, const char* key, const std::string& field, const Source& source,
                   ReadItem read_item) {
  const Json& list = require_key(json, key, field, source);
  if (!list.is_array()) source.fail(field + "." + key, "expected an array");
  for (size_t i = 0; i < list.size(); ++i) read_item(list[i], field + "." + key + "[" + std::to_string(i) + "]");
}

// {"String": "..."} or {"Regex": "..."} into `literal` or `regex`; an empty String would match between every
// char, which no real file asks for.
void read_pattern(const Json& json, const std::string& field, const Source& source, std::string& literal,
                  std::optional<Regex>& regex) {
  const std::string pattern_field = field + ".pattern";
  const Json& pattern = require_object(require_key(json, "pattern", field, source), pattern_field, source);
  if (const Json* text = find_key(pattern, "Regex")) {
    regex.emplace(read_string(*text, pattern_field + ".Regex", source), source.name, pattern_field + ".Regex");
  } else if (const Json* text = find_key(pattern, "String")) {
    literal = read_string(*text, pattern_field + ".String", source);
    if (literal.empty()) source.fail(pattern_field + ".String", "is empty");
  } else {
    source.fail(pattern_field, "expected {\"Regex\": ...} or {\"String\": ...}");
  }
}

// A JSON string holding exactly one char (HF reads these fields as a Rust char).
std::string read_char(const Json& object, const char* key, const std::string& field, const Source& source) {
  const std::string key_field = field + "." + key;
  const std::string text = read_string(require_key(object, key, field, source), key_field, source);
  bool one_char = !text.empty() && find_invalid_utf8(text) == text.size();
  if (one_char) {
    size_t length = 0;
    decode_utf8_char(text, 0, length);
    one_char = length == text.size();
  }
  if (!one_char) source.fail(key_field, "expected one char, got " + json_quoted(text));
  return text;
}

size_t read_count(const Json& object, const char* key, const std::string& field, const Source& source) {
  const Json& value = require_key(object, key, field, source);
  if (!value.is_number_unsigned()) {
    source.fail(field + "." + key, std::string("expected a non-negative integer, got ") + value.dump());
  }
  return value.get<size_t>();
}

// Metaspace's prepend_scheme, as HF reads it: "always" when absent; the older add_prefix_space: false means
// "never" and, as in HF, contradicts any other scheme (absent counts as "always").
PrependScheme read_prepend_scheme(const Json& json, const std::string& field, const Source& source) {
  PrependScheme scheme = PrependScheme::kAlways;
  if (const Json* value = find_key(json, "prepend_scheme"); value != nullptr && !value->is_null()) {
    const std::string name = read_string(*value, field + ".prepend_scheme", source);
    if (name == "always") {
      scheme = PrependScheme::kAlways;
    } else if (name == "first") {
      scheme = PrependScheme::kFirst;
    } else if (name == "never") {
      scheme = PrependScheme::kNever;
    } else {
      source.fail(field + ".prepend_scheme", json_quoted(name) + " is not one of \"always\", \"first\", \"never\"");
    }
  }
  if (!read_bool(json, "add_prefix_space", true, field, source) && scheme != PrependScheme::kNever) {
    source.fail(field + ".add_prefix_space", "false contradicts prepend_scheme (use \"never\")");
  }
  return scheme;
}

SplitBehavior read_behavior(const Json& step, const std::string& field, const Source& source) {
  const std::string name = read_string(require_key(step, "behavior", field, source), field + ".behavior", source);
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  source.fail(field + ".behavior", json_quoted(name) +
                                       " is not one of Removed, Isolated, MergedWithPrevious, "
                                       "MergedWithNext, Contiguous");
}

}  // namespace

void read_normalizer(const Json& json, const std::string& field, const Source& source,
                     std::vector<NormalizeStep>& steps, int depth) {
  check_depth(depth, field, source);
  const std::string type = read_type(json, field, source);
  if (type == "Sequence") {
    read_sequence(json, "normalizers", field, source, [&](const Json& item, const std::string& item_field) {
      read_normalizer(item, item_field, source, steps, depth + 1);
    });
    return;
  }
  NormalizeStep step;
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    step.form = type == "NFC"    ? NormalForm::kNfc
                : type == "NFD"  ? NormalForm::kNfd
                : type == "NFKC" ? NormalForm::kNfkc
                                 : NormalForm::kNfkd;
  } else if (type == "Prepend") {
    step.kind = NormalizeStep::Kind::kPrepend;
    step.text = read_string(require_key(json, "prepend", field, source), field + ".prepend", source);
  } else if (type == "Replace") {
    step.kind = NormalizeStep::Kind::kReplace;
    read_pattern(json, field, source, step.literal, step.regex);
    step.text = read_string(require_key(json, "content", field, source), field + ".content", source);
  } else if (type == "Strip") {
    step.kind = NormalizeStep::Kind::kStrip;
    step.strip_left = read_bool(json, "strip_left", false, field, source);
    step.strip_right = read_bool(json, "strip_right", false, field, source);
  } else {
    source.fail(field + ".type", json_quoted(type) +
                                     " is not supported; supported: NFC, NFD, NFKC, NFKD, Prepend, Replace, Strip, "
                                     "Sequence");
  }
  steps.push_back(std::move(step));
}

void read_pre_tokenizer(const Json& json, const std::string& field, const Source& source,
                        std::vector<PreTokenizeStep>& steps, int depth) {
  check_depth(depth, field, source);
  const std::string type = read_type(json, field, source);
  if (type == "Sequence") {
    read_sequence(json, "pretokenizers", field, source, [&](const Json& item, const std::string& item_field) {
      read_pre_tokenizer(item, item_field, source, steps, depth + 1);
    });
    return;
  }
  PreTokenizeStep step;
  if (type == "ByteLevel") {
    step.kind = PreTokenizeStep::Kind::kByteLevel;
    // Defaults are HF's ByteLevel::default().
    step.add_prefix_space = read_bool(json, "add_prefix_space", true, field, source);
    if (read_bool(json, "use_regex", true, field, source)) step.regex.emplace(kGpt2SplitPattern, source.name, field);
  } else if (type == "Metaspace") {
    step.kind = PreTokenizeStep::Kind::kMetaspace;
    step.replacement = read_char(json, "replacement", field, source);
    step.prepend_scheme = read_prepend_scheme(json, field, source);
    step.split = read_bool(json, "split", true, field, source);
  } else if (type == "Split") {
    read_pattern(json, field, source, step.literal, step.regex);
    step.behavior = read_behavior(json, field, source);
    step.invert = read_bool(json, "invert", false, field, source);
  } else if (type == "Digits") {
    const bool individual = read_bool(json, "individual_digits", false, field, source);
    // Rust's char::is_numeric is the N category; one match per char, merged when not individual.
    step.regex.emplace(individual ? R"(\p{N})" : R"(\p{N}+)", source.name, field);
  } else {
    source.fail(field + ".type",
                json_quoted(type) + " is not supported; supported: ByteLevel, Metaspace, Split, Digits, Sequence");
  }
  steps.push_back(std::move(step));
}

void read_decoder(const Json& json, const std::string& field, const Source& source, std::vector<DecodeStep>& steps,
                  int depth) {
  check_depth(depth, field, source);
  const std::string type = read_type(json, field, source);
  if (type == "Sequence") {
    read_sequence(json, "decoders", field, source, [&](const Json& item, const std::string& item_field) {
      read_decoder(item, item_field, source, steps, depth + 1);
    });
    return;
  }
  DecodeStep step;
  if (type == "ByteLevel") {
    step.kind = DecodeStep::Kind::kByteLevel;
  } else if (type == "Replace") {
    step.kind = DecodeStep::Kind::kReplace;
    read_pattern(json, field, source, step.literal, step.regex);
    step.content = read_string(require_key(json, "content", field, source), field + ".content", source);
  } else if (type == "ByteFallback") {
    step.kind = DecodeStep::Kind::kByteFallback;
  } else if (type == "Fuse") {
    step.kind = DecodeStep::Kind::kFuse;
  } else if (type == "Strip") {
    step.kind = DecodeStep::Kind::kStrip;
    step.content = read_char(json, "content", field, source);
    step.strip_start = read_count(json, "start", field, source);
    step.strip_stop = read_count(json, "stop", field, source);
  } else if (type == "Metaspace") {
    step.kind = DecodeStep::Kind::kMetaspace;
    step.replacement = read_char(json, "replacement", field, source);
    step.drops_first_replacement = read_prepend_scheme(json, field, source) != PrependScheme::kNever;
  } else {
    source.fail(field + ".type", json_quoted(type) +
                                     " is not supported; supported: ByteLevel, Metaspace, Replace, ByteFallback, "
                                     "Fuse, Strip, Sequence");
  }
  steps.push_back(std::move(step));
}

}  // namespace kvforge::detail
