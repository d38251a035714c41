// Reading and validating a Hugging Face tokenizer.json into TokenizerData, and writing the byte tokenizer's.
// Every rejection names the JSON field, e.g. "model.merges[12]"; what is supported is listed in tokenizer.h.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "runtime/byte_level.h"
#include "runtime/input_error.h"
#include "runtime/json_file.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer_data.h"

namespace kvforge {
namespace detail {
namespace {

using Json = nlohmann::json;

// Ids index dense tables, so a hostile file must not make them huge; real vocabularies stay far below.
constexpr int64_t kMaxTokenId = int64_t{1} << 21;
// Sequences inside Sequences; real files nest one level, a hostile one must not exhaust the stack.
constexpr int kMaxNesting = 8;

std::string json_quoted(const std::string& text) { return Json(text).dump(); }

// ---- JSON access that names the field on failure --------------------------------------------------------

struct Source {
  std::string name;
  [[noreturn]] void fail(const std::string& field, const std::string& problem) const {
    fail_input(name, field, problem);
  }
};

const Json* find_key(const Json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

const Json& require_object(const Json& value, const std::string& field, const Source& source) {
  if (!value.is_object()) source.fail(field, std::string("expected an object, got ") + value.type_name());
  return value;
}

const Json& require_key(const Json& object, const char* key, const std::string& field, const Source& source) {
  const Json* value = find_key(object, key);
  if (value == nullptr) source.fail(field + "." + key, "is missing");
  return *value;
}

std::string read_string(const Json& value, const std::string& field, const Source& source) {
  if (!value.is_string()) source.fail(field, std::string("expected a string, got ") + value.type_name());
  return value.get<std::string>();
}

bool read_bool(const Json& object, const char* key, bool fallback, const std::string& field, const Source& source) {
  const Json* value = find_key(object, key);
  if (value == nullptr || value->is_null()) return fallback;
  if (!value->is_boolean())
    source.fail(field + "." + key, std::string("expected true or false, got ") + value->type_name());
  return value->get<bool>();
}

int32_t read_id(const Json& value, const std::string& field, const Source& source) {
  if (!value.is_number_integer()) source.fail(field, std::string("expected an integer id, got ") + value.type_name());
  const int64_t id = value.get<int64_t>();
  if (id < 0 || id >= kMaxTokenId) {
    source.fail(field, "id " + std::to_string(id) + " is outside [0, " + std::to_string(kMaxTokenId) + ")");
  }
  return static_cast<int32_t>(id);
}

std::string read_type(const Json& object, const std::string& field, const Source& source) {
  return read_string(require_key(require_object(object, field, source), "type", field, source), field + ".type",
                     source);
}

// ---- The sections of tokenizer.json ------------------------------------------------------------------

void read_model(const Json& json, const Source& source, TokenizerData& data) {
  const std::string field = "model";
  require_object(json, field, source);
  if (const Json* type = find_key(json, "type")) {  // HF also accepts a BPE model without "type"
    const std::string name = read_string(*type, "model.type", source);
    if (name != "BPE") source.fail("model.type", json_quoted(name) + " is not supported; only \"BPE\" is");
  }
  if (read_bool(json, "byte_fallback", false, field, source)) {
    source.fail("model.byte_fallback", "true is not supported (byte-level BPE has every byte in its vocab)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const Json* value = find_key(json, key);
    if (value != nullptr && !value->is_null() && !(value->is_string() && value->get<std::string>().empty())) {
      source.fail(field + "." + key, "is not supported (only null)");
    }
  }
  if (const Json* dropout = find_key(json, "dropout"); dropout != nullptr && !dropout->is_null()) {
    if (!dropout->is_number() || dropout->get<double>() != 0.0)
      source.fail("model.dropout", "must be null (no dropout)");
  }
  BpeModel& model = data.model;
  model.fuse_unk = read_bool(json, "fuse_unk", false, field, source);
  model.ignore_merges = read_bool(json, "ignore_merges", false, field, source);

  const Json& vocab = require_object(require_key(json, "vocab", field, source), "model.vocab", source);
  for (const auto& [token, id_json] : vocab.items()) {
    const std::string token_field = "model.vocab[" + json_quoted(token) + "]";
    const int32_t id = read_id(id_json, token_field, source);
    if (static_cast<size_t>(id) >= data.token_of_id.size()) {
      data.token_of_id.resize(id + 1);
      data.has_token.resize(id + 1, 0);
    }
    if (data.has_token[id]) {
      source.fail(token_field, "id " + std::to_string(id) + " is also given to " + json_quoted(data.token_of_id[id]));
    }
    data.token_of_id[id] = token;
    data.has_token[id] = 1;
    model.vocab.emplace(token, id);
  }

  if (const Json* unk = find_key(json, "unk_token"); unk != nullptr && !unk->is_null()) {
    const std::string unk_token = read_string(*unk, "model.unk_token", source);
    const auto found = model.vocab.find(unk_token);
    if (found == model.vocab.end()) source.fail("model.unk_token", json_quoted(unk_token) + " is not in model.vocab");
    model.unk_id = found->second;
  }

  const Json* merges = find_key(json, "merges");
  if (merges == nullptr || merges->is_null()) return;
  if (!merges->is_array()) source.fail("model.merges", std::string("expected an array, got ") + merges->type_name());
  model.merges.reserve(merges->size());
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const Json& merge = (*merges)[rank];
    const std::string merge_field = "model.merges[" + std::to_string(rank) + "]";
    std::string left;
    std::string right;
    if (merge.is_string()) {
      const std::string line = merge.get<std::string>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        source.fail(merge_field, "expected \"<left> <right>\" with one space, got " + json_quoted(line));
      }
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      source.fail(merge_field, "expected \"<left> <right>\" or [\"<left>\", \"<right>\"], got " + merge.dump());
    }
    int32_t ids[3] = {};
    const std::string parts[3] = {left, right, left + right};
    for (int part = 0; part < 3; ++part) {
      const auto found = model.vocab.find(parts[part]);
      if (found == model.vocab.end())
        source.fail(merge_field, "token " + json_quoted(parts[part]) + " is not in model.vocab");
      ids[part] = found->second;
    }
    // A repeated merge takes its later rank, as in HF (the later map insert wins).
    model.merges.insert_or_assign(pair_key(ids[0], ids[1]), BpeModel::Merge{static_cast<int32_t>(rank), ids[2]});
  }
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

void read_pre_tokenizer(const Json& json, const std::string& field, const Source& source,
                        std::vector<PreTokenizeStep>& steps, int depth = 0) {
  if (depth > kMaxNesting) source.fail(field, "Sequences nest deeper than " + std::to_string(kMaxNesting));
  const std::string type = read_type(json, field, source);
  PreTokenizeStep step;
  if (type == "Sequence") {
    const Json& list = require_key(json, "pretokenizers", field, source);
    if (!list.is_array()) source.fail(field + ".pretokenizers", "expected an array");
    for (size_t i = 0; i < list.size(); ++i) {
      read_pre_tokenizer(list[i], field + ".pretokenizers[" + std::to_string(i) + "]", source, steps, depth + 1);
    }
    return;
  }
  if (type == "ByteLevel") {
    step.kind = PreTokenizeStep::Kind::kByteLevel;
    // Defaults are HF's ByteLevel::default().
    step.add_prefix_space = read_bool(json, "add_prefix_space", true, field, source);
    if (read_bool(json, "use_regex", true, field, source)) step.regex.emplace(kGpt2SplitPattern, source.name, field);
  } else if (type == "Split") {
    const std::string pattern_field = field + ".pattern";
    const Json& pattern = require_object(require_key(json, "pattern", field, source), pattern_field, source);
    if (const Json* regex = find_key(pattern, "Regex")) {
      step.regex.emplace(read_string(*regex, pattern_field + ".Regex", source), source.name, pattern_field + ".Regex");
    } else if (const Json* literal = find_key(pattern, "String")) {
      step.literal = read_string(*literal, pattern_field + ".String", source);
    } else {
      source.fail(pattern_field, "expected {\"Regex\": ...} or {\"String\": ...}");
    }
    step.behavior = read_behavior(json, field, source);
    step.invert = read_bool(json, "invert", false, field, source);
  } else if (type == "Digits") {
    const bool individual = read_bool(json, "individual_digits", false, field, source);
    // Rust's char::is_numeric is the N category; one match per char, merged when not individual.
    step.regex.emplace(individual ? R"(\p{N})" : R"(\p{N}+)", source.name, field);
  } else {
    source.fail(field + ".type",
                json_quoted(type) + " is not supported; supported: ByteLevel, Split, Digits, Sequence");
  }
  steps.push_back(std::move(step));
}

void read_normalizer(const Json& json, const std::string& field, const Source& source, std::vector<NormalForm>& forms,
                     int depth = 0) {
  if (depth > kMaxNesting) source.fail(field, "Sequences nest deeper than " + std::to_string(kMaxNesting));
  const std::string type = read_type(json, field, source);
  if (type == "Sequence") {
    const Json& list = require_key(json, "normalizers", field, source);
    if (!list.is_array()) source.fail(field + ".normalizers", "expected an array");
    for (size_t i = 0; i < list.size(); ++i) {
      read_normalizer(list[i], field + ".normalizers[" + std::to_string(i) + "]", source, forms, depth + 1);
    }
    return;
  }
  if (type == "NFC") {
    forms.push_back(NormalForm::kNfc);
  } else if (type == "NFD") {
    forms.push_back(NormalForm::kNfd);
  } else if (type == "NFKC") {
    forms.push_back(NormalForm::kNfkc);
  } else if (type == "NFKD") {
    forms.push_back(NormalForm::kNfkd);
  } else {
    source.fail(field + ".type", json_quoted(type) + " is not supported; supported: NFC, NFD, NFKC, NFKD, Sequence");
  }
}

// Needs the normalizer read first: HF matches a normalized token by its content after the normalizer. Returns
// that content for the tokens the normalizer changes, by id.
std::unordered_map<int32_t, std::string> read_added_tokens(const Json& json, const Source& source,
                                                           TokenizerData& data) {
  if (!json.is_array()) source.fail("added_tokens", std::string("expected an array, got ") + json.type_name());
  std::vector<AddedToken> raw;
  std::vector<AddedToken> normalized;
  std::unordered_map<int32_t, std::string> changed_by_normalizer;
  for (size_t i = 0; i < json.size(); ++i) {
    const std::string field = "added_tokens[" + std::to_string(i) + "]";
    const Json& entry = require_object(json[i], field, source);
    AddedToken token;
    token.id = read_id(require_key(entry, "id", field, source), field + ".id", source);
    token.content = read_string(require_key(entry, "content", field, source), field + ".content", source);
    if (token.content.empty()) source.fail(field + ".content", "is empty");
    token.special = read_bool(entry, "special", false, field, source);
    token.lstrip = read_bool(entry, "lstrip", false, field, source);
    token.rstrip = read_bool(entry, "rstrip", false, field, source);
    token.single_word = read_bool(entry, "single_word", false, field, source);
    token.normalized = read_bool(entry, "normalized", true, field, source);

    const auto in_vocab = data.model.vocab.find(token.content);
    if (in_vocab != data.model.vocab.end() && in_vocab->second != token.id) {
      source.fail(field + ".id", std::to_string(token.id) + " but model.vocab gives " + json_quoted(token.content) +
                                     " id " + std::to_string(in_vocab->second));
    }
    if (static_cast<size_t>(token.id) >= data.token_of_id.size()) {
      data.token_of_id.resize(token.id + 1);
      data.has_token.resize(token.id + 1, 0);
    }
    if (data.has_token[token.id] && data.token_of_id[token.id] != token.content) {
      source.fail(field + ".id",
                  std::to_string(token.id) + " already names " + json_quoted(data.token_of_id[token.id]));
    }
    data.token_of_id[token.id] = token.content;
    data.has_token[token.id] = 1;
    if (!data.added_ids.emplace(token.content, token.id).second) source.fail(field + ".content", "is listed twice");
    if (token.special) {
      data.special.resize(std::max(data.special.size(), static_cast<size_t>(token.id) + 1), 0);
      data.special[token.id] = 1;
    }
    if (token.normalized) {
      std::string matched = normalize(token.content, data.normalizer, source.name);
      if (matched != token.content) changed_by_normalizer.emplace(token.id, matched);
      token.content = std::move(matched);
      normalized.push_back(std::move(token));
    } else {
      raw.push_back(std::move(token));
    }
  }
  data.raw_added.emplace(std::move(raw));
  data.normalized_added.emplace(std::move(normalized));
  return changed_by_normalizer;
}

void read_post_processor(const Json& json, const std::string& field, const Source& source, TokenizerData& data,
                         int depth = 0) {
  if (depth > kMaxNesting) source.fail(field, "Sequences nest deeper than " + std::to_string(kMaxNesting));
  const std::string type = read_type(json, field, source);
  if (type == "ByteLevel") return;  // only adjusts offsets, never ids
  if (type == "Sequence") {
    const Json& list = require_key(json, "processors", field, source);
    if (!list.is_array()) source.fail(field + ".processors", "expected an array");
    for (size_t i = 0; i < list.size(); ++i) {
      read_post_processor(list[i], field + ".processors[" + std::to_string(i) + "]", source, data, depth + 1);
    }
    return;
  }
  if (type != "TemplateProcessing") {
    source.fail(field + ".type",
                json_quoted(type) + " is not supported; supported: TemplateProcessing, ByteLevel, Sequence");
  }
  const Json& special_tokens =
      require_object(require_key(json, "special_tokens", field, source), field + ".special_tokens", source);
  const Json& single = require_key(json, "single", field, source);
  if (!single.is_array()) source.fail(field + ".single", "expected an array");
  std::vector<TemplatePiece> pieces;
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string item_field = field + ".single[" + std::to_string(i) + "]";
    const Json& item = require_object(single[i], item_field, source);
    if (const Json* sequence = find_key(item, "Sequence")) {
      const std::string id = read_string(require_key(require_object(*sequence, item_field + ".Sequence", source), "id",
                                                     item_field + ".Sequence", source),
                                         item_field + ".Sequence.id", source);
      if (id != "A")
        source.fail(item_field + ".Sequence.id", json_quoted(id) + " in a single-sequence template; expected \"A\"");
      pieces.push_back({/*is_sequence=*/true, {}});
    } else if (const Json* special = find_key(item, "SpecialToken")) {
      const std::string name = read_string(require_key(require_object(*special, item_field + ".SpecialToken", source),
                                                       "id", item_field + ".SpecialToken", source),
                                           item_field + ".SpecialToken.id", source);
      const std::string entry_field = field + ".special_tokens[" + json_quoted(name) + "]";
      const Json* entry = find_key(special_tokens, name.c_str());
      if (entry == nullptr) source.fail(entry_field, "is missing (named by " + item_field + ")");
      const Json& ids = require_key(require_object(*entry, entry_field, source), "ids", entry_field, source);
      if (!ids.is_array()) source.fail(entry_field + ".ids", "expected an array");
      std::vector<int32_t> token_ids;
      for (size_t k = 0; k < ids.size(); ++k) {
        const std::string id_field = entry_field + ".ids[" + std::to_string(k) + "]";
        const int32_t id = read_id(ids[k], id_field, source);
        if (static_cast<size_t>(id) >= data.has_token.size() || !data.has_token[id]) {
          source.fail(id_field, "id " + std::to_string(id) + " is not in the vocabulary");
        }
        token_ids.push_back(id);
      }
      pieces.push_back({/*is_sequence=*/false, std::move(token_ids)});
    } else {
      source.fail(item_field, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
    }
  }
  data.templates.push_back(std::move(pieces));
}

void reject_unless_null(const Json& root, const char* key, const std::string& why, const Source& source) {
  const Json* value = find_key(root, key);
  if (value != nullptr && !value->is_null()) source.fail(key, why);
}

std::shared_ptr<const TokenizerData> read_tokenizer(const Json& root, const Source& source) {
  auto data = std::make_shared<TokenizerData>();
  data->source_name = source.name;
  require_object(root, "", source);
  if (const Json* normalizer = find_key(root, "normalizer"); normalizer != nullptr && !normalizer->is_null()) {
    read_normalizer(*normalizer, "normalizer", source, data->normalizer);
  }
  reject_unless_null(root, "truncation", "is not supported (kvforge never truncates in the tokenizer); use null",
                     source);
  reject_unless_null(root, "padding", "is not supported (kvforge never pads in the tokenizer); use null", source);
  read_model(require_key(root, "model", "", source), source, *data);

  const Json* added = find_key(root, "added_tokens");
  const std::unordered_map<int32_t, std::string> changed_by_normalizer =
      read_added_tokens(added != nullptr && !added->is_null() ? *added : Json::array(), source, *data);

  const Json* pre_tokenizer = find_key(root, "pre_tokenizer");
  if (pre_tokenizer == nullptr || pre_tokenizer->is_null()) {
    source.fail("pre_tokenizer", "is null; byte-level BPE needs a ByteLevel pre-tokenizer (alone or in a Sequence)");
  }
  read_pre_tokenizer(*pre_tokenizer, "pre_tokenizer", source, data->pre_tokenizer);
  const auto byte_level_steps =
      std::count_if(data->pre_tokenizer.begin(), data->pre_tokenizer.end(),
                    [](const auto& step) { return step.kind == PreTokenizeStep::Kind::kByteLevel; });
  if (byte_level_steps != 1) {
    source.fail("pre_tokenizer",
                "has " + std::to_string(byte_level_steps) + " ByteLevel steps; byte-level BPE needs exactly one");
  }

  if (const Json* post = find_key(root, "post_processor"); post != nullptr && !post->is_null()) {
    read_post_processor(*post, "post_processor", source, *data);
  }

  const Json* decoder = find_key(root, "decoder");
  if (decoder == nullptr || decoder->is_null())
    source.fail("decoder", "is null; only a ByteLevel decoder is supported");
  const std::string decoder_type = read_type(*decoder, "decoder", source);
  if (decoder_type != "ByteLevel")
    source.fail("decoder.type", json_quoted(decoder_type) + " is not supported; only \"ByteLevel\" is");

  data->word_char.emplace(kRustWordChar, source.name, "added_tokens");
  data->special.resize(data->token_of_id.size(), 0);
  data->bytes_of_id.resize(data->token_of_id.size());
  for (size_t id = 0; id < data->token_of_id.size(); ++id) {
    // HF (0.23) decodes an added token that the normalizer changed from its normalized content, even where that
    // gives odd bytes (NFC turns U+212B into U+00C5, which the ByteLevel decoder reads as the byte 0xC5).
    const auto changed = changed_by_normalizer.find(static_cast<int32_t>(id));
    const std::string& token = changed != changed_by_normalizer.end() ? changed->second : data->token_of_id[id];
    // HF's ByteLevel decoder keeps a token whole when any of its chars is outside the alphabet.
    data->bytes_of_id[id] = byte_level_to_bytes(token).value_or(token);
  }
  return data;
}

}  // namespace

std::shared_ptr<const TokenizerData> read_tokenizer_json(const std::string& json_text, const std::string& source_name) {
  Json root;
  try {
    root = parse_json(json_text, source_name);
  } catch (const Json::exception& error) {  // parse_json maps parse errors; a number too big is out_of_range
    fail_input(source_name, "", std::string("malformed JSON: ") + error.what());
  }
  return read_tokenizer(root, Source{source_name});
}

}  // namespace detail

// ---- Writing one: the byte tokenizer ------------------------------------------------------------------

std::string byte_tokenizer_json(const std::vector<std::string>& special_tokens) {
  using Ordered = nlohmann::ordered_json;
  Ordered vocab = Ordered::object();
  for (int byte = 0; byte < 256; ++byte) {
    vocab[bytes_to_byte_level(std::string(1, static_cast<char>(byte)))] = byte;
  }
  Ordered added = Ordered::array();
  int64_t next_id = 256;
  for (const std::string& token : special_tokens) {
    if (token.empty()) throw std::invalid_argument("byte_tokenizer_json: empty special token");
    if (find_invalid_utf8(token) != token.size()) {
      throw std::invalid_argument("byte_tokenizer_json: a special token is not valid UTF-8");
    }
    if (vocab.contains(token))
      throw std::invalid_argument("byte_tokenizer_json: special token " + detail::json_quoted(token) +
                                  " repeats or is a byte");
    vocab[token] = next_id;
    added.push_back({{"id", next_id},
                     {"content", token},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
    ++next_id;
  }
  const Ordered byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
  Ordered root = Ordered::object();
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  root["added_tokens"] = added;
  root["normalizer"] = nullptr;
  root["pre_tokenizer"] = byte_level;
  root["post_processor"] = nullptr;
  root["decoder"] = byte_level;
  root["model"] = {{"type", "BPE"},
                   {"dropout", nullptr},
                   {"unk_token", nullptr},
                   {"continuing_subword_prefix", nullptr},
                   {"end_of_word_suffix", nullptr},
                   {"fuse_unk", false},
                   {"byte_fallback", false},
                   {"ignore_merges", false},
                   {"vocab", vocab},
                   {"merges", Ordered::array()}};
  return root.dump(2);
}

}  // namespace kvforge
