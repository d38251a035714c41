// Reading and validating a Hugging Face tokenizer.json into TokenizerData, and writing the byte tokenizer's.
// Every rejection names the JSON field, e.g. "model.merges[12]"; what is supported is listed in tokenizer.h. The
// normalizer, pre-tokenizer and decoder chains are read in tokenizer_json_steps.cpp.
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "runtime/byte_level.h"
#include "runtime/input_error.h"
#include "runtime/json_file.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer_data.h"
#include "runtime/tokenizer_json_fields.h"
#include "runtime/tokenizer_json_steps.h"

namespace kvforge {
namespace detail {
namespace {

// ---- The sections of tokenizer.json ------------------------------------------------------------------

void read_model(const Json& json, const Source& source, TokenizerData& data) {
  const std::string field = "model";
  require_object(json, field, source);
  if (const Json* type = find_key(json, "type")) {  // HF also accepts a BPE model without "type"
    const std::string name = read_string(*type, "model.type", source);
    if (name != "BPE") {
      source.fail("model.type", json_quoted(name) +
                                    " is not supported; the only supported model type is \"BPE\" (not Unigram, "
                                    "WordPiece or WordLevel)");
    }
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
  model.byte_fallback = read_bool(json, "byte_fallback", false, field, source);

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

  model.byte_ids.fill(-1);
  for (int byte = 0; byte < 256; ++byte) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", byte);  // HF's spelling: upper-case hex digits
    const auto found = model.vocab.find(name);
    if (found != model.vocab.end()) model.byte_ids[byte] = found->second;
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

  // SentencePiece-style files (Llama 2) have none: the normalizer already turned spaces into "▁".
  if (const Json* pre_tokenizer = find_key(root, "pre_tokenizer");
      pre_tokenizer != nullptr && !pre_tokenizer->is_null()) {
    read_pre_tokenizer(*pre_tokenizer, "pre_tokenizer", source, data->pre_tokenizer);
  }

  if (const Json* post = find_key(root, "post_processor"); post != nullptr && !post->is_null()) {
    read_post_processor(*post, "post_processor", source, *data);
  }

  if (const Json* decoder = find_key(root, "decoder"); decoder != nullptr && !decoder->is_null()) {
    data->decoder.present = true;
    read_decoder(*decoder, "decoder", source, data->decoder.steps);
  }
  // A lone ByteLevel decoder maps each token to its bytes regardless of its neighbours, so decode can look them up.
  data->decodes_by_id = data->decoder.present && data->decoder.steps.size() == 1 &&
                        data->decoder.steps[0].kind == DecodeStep::Kind::kByteLevel;

  data->word_char.emplace(kRustWordChar, source.name, "added_tokens");
  data->special.resize(data->token_of_id.size(), 0);
  (data->decodes_by_id ? data->bytes_of_id : data->decoder_token_of_id).resize(data->token_of_id.size());
  for (size_t id = 0; id < data->token_of_id.size(); ++id) {
    // HF (0.23) decodes an added token that the normalizer changed from its normalized content, even where that
    // gives odd bytes (NFC turns U+212B into U+00C5, which the ByteLevel decoder reads as the byte 0xC5).
    const auto changed = changed_by_normalizer.find(static_cast<int32_t>(id));
    const std::string& token = changed != changed_by_normalizer.end() ? changed->second : data->token_of_id[id];
    if (data->decodes_by_id) {
      // HF's ByteLevel decoder keeps a token whole when any of its chars is outside the alphabet.
      data->bytes_of_id[id] = byte_level_to_bytes(token).value_or(token);
    } else {
      data->decoder_token_of_id[id] = token;
    }
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
