#pragma once
// What a Tokenizer holds: everything read from tokenizer.json, in the shapes encode and decode use. Internal to
// the tokenizer; tokenizer_json.cpp builds it, tokenizer.cpp uses it.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "runtime/added_tokens.h"
#include "runtime/bpe_model.h"
#include "runtime/decoder.h"
#include "runtime/normalizer.h"
#include "runtime/pre_tokenizer.h"
#include "runtime/tokenizer_regex.h"

namespace kvforge::detail {

// One piece of a TemplateProcessing "single" template: the sequence itself, or a run of special-token ids.
struct TemplatePiece {
  bool is_sequence = false;
  std::vector<int32_t> special_ids;
};

struct TokenizerData {
  std::string source_name;
  BpeModel model;
  std::vector<NormalizeStep> normalizer;       // empty: none
  std::vector<PreTokenizeStep> pre_tokenizer;  // empty: none (each text between added tokens is one piece)
  // Non-normalized tokens match on the raw text, then normalized ones on the normalized rest (HF's order).
  std::optional<AddedTokenMatcher> raw_added;
  std::optional<AddedTokenMatcher> normalized_added;
  std::optional<Regex> word_char;  // kRustWordChar
  // Each template wraps the ids of the previous one (a Sequence of post-processors gives several).
  std::vector<std::vector<TemplatePiece>> templates;

  std::unordered_map<std::string, int32_t> added_ids;  // content as written -> id
  std::vector<std::string> token_of_id;                // "" where no token has the id (has_token tells)
  std::vector<uint8_t> has_token;
  std::vector<uint8_t> special;

  Decoder decoder;
  // The decoder is a lone ByteLevel, so each id decodes on its own: to bytes_of_id[id]. Otherwise the decoder
  // runs over decoder_token_of_id[id] for the ids (HF's token strings; the normalized content of a normalized
  // added token the normalizer changed). Only the one in use is filled.
  bool decodes_by_id = false;
  std::vector<std::string> bytes_of_id;
  std::vector<std::string> decoder_token_of_id;
};

// Reads tokenizer.json text; malformed, bad or unsupported content throws InputError naming `source_name` and
// the JSON field. Defined in tokenizer_json.cpp.
std::shared_ptr<const TokenizerData> read_tokenizer_json(const std::string& json_text, const std::string& source_name);

}  // namespace kvforge::detail
