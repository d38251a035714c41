// The public Tokenizer: encode runs HF's pipeline (added tokens, normalizer, pre-tokenizer, BPE, template);
// decode runs the decoder. The stages live in their own files; tokenizer_json.cpp reads the file.
#include "runtime/tokenizer.h"

#include <utility>

#include "runtime/byte_level.h"
#include "runtime/input_error.h"
#include "runtime/json_file.h"
#include "runtime/tokenizer_data.h"

namespace kvforge {

using detail::kNoToken;
using detail::Segment;
using detail::TokenizerData;

Tokenizer::Tokenizer(std::shared_ptr<const detail::TokenizerData> data) : data_(std::move(data)) {}

Tokenizer Tokenizer::from_file(const std::string& path) { return from_json_text(read_text_file(path), path); }

Tokenizer Tokenizer::from_json_text(const std::string& json_text, const std::string& source_name) {
  return Tokenizer(detail::read_tokenizer_json(json_text, source_name));
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_special_tokens) const {
  const TokenizerData& data = *data_;
  const size_t invalid_at = find_invalid_utf8(text);
  if (invalid_at != text.size()) {
    fail_input(data.source_name, "encode", "text is not valid UTF-8 (byte " + std::to_string(invalid_at) + ")");
  }
  std::vector<Segment> segments{{text, kNoToken}};
  const char* const text_begin = text.data();
  segments = data.raw_added->split(segments, *data.word_char);
  // As HF: only the text between non-normalized added tokens is normalized, and the normalized added tokens are
  // then found in what it became. Reserved up front, so the segments' views into it stay valid.
  std::vector<std::string> normalized_texts;
  // Metaspace's "first" scheme needs to know which piece begins the input; normalizing loses that pointer, so the
  // normalized text that came from the input's start is remembered.
  const char* normalized_begin = text_begin;
  if (!data.normalizer.empty()) {
    normalized_texts.reserve(segments.size());
    for (Segment& segment : segments) {
      if (segment.added_id != kNoToken) continue;
      const bool starts_input = segment.text.data() == text_begin;
      normalized_texts.push_back(detail::normalize(segment.text, data.normalizer, data.source_name));
      segment.text = normalized_texts.back();
      if (starts_input) normalized_begin = segment.text.data();
    }
  }
  segments = data.normalized_added->split(segments, *data.word_char);

  std::vector<int64_t> ids;
  for (const Segment& segment : segments) {
    if (segment.added_id != kNoToken) {
      ids.push_back(segment.added_id);
      continue;
    }
    if (segment.text.empty()) continue;  // HF makes no piece of it, so add_prefix_space adds nothing
    const bool starts_input = segment.text.data() == normalized_begin;
    for (const std::string& piece : detail::pre_tokenize(data.pre_tokenizer, segment.text, starts_input)) {
      data.model.encode_piece(piece, ids);
    }
  }

  if (!add_special_tokens) return ids;
  for (const std::vector<detail::TemplatePiece>& pieces : data.templates) {
    std::vector<int64_t> wrapped;
    for (const detail::TemplatePiece& piece : pieces) {
      if (piece.is_sequence) {
        wrapped.insert(wrapped.end(), ids.begin(), ids.end());
      } else {
        wrapped.insert(wrapped.end(), piece.special_ids.begin(), piece.special_ids.end());
      }
    }
    ids.swap(wrapped);
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  const TokenizerData& data = *data_;
  std::string bytes;
  std::vector<std::string> tokens;
  for (const int64_t id : ids) {
    if (id < 0 || id >= vocab_size() || !data.has_token[id]) continue;
    if (skip_special_tokens && data.special[id]) continue;
    if (data.decodes_by_id) {
      bytes += data.bytes_of_id[id];
    } else {
      tokens.push_back(data.decoder_token_of_id[id]);
    }
  }
  return data.decodes_by_id ? bytes : detail::decode_tokens(std::move(tokens), data.decoder);
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(data_->token_of_id.size()); }

std::optional<int64_t> Tokenizer::token_to_id(const std::string& token) const {
  const auto added = data_->added_ids.find(token);
  if (added != data_->added_ids.end()) return added->second;
  const auto found = data_->model.vocab.find(token);
  if (found != data_->model.vocab.end()) return found->second;
  return std::nullopt;
}

std::optional<std::string> Tokenizer::id_to_token(int64_t id) const {
  if (id < 0 || id >= vocab_size() || !data_->has_token[id]) return std::nullopt;
  return data_->token_of_id[id];
}

bool Tokenizer::is_special(int64_t id) const { return id >= 0 && id < vocab_size() && data_->special[id]; }

}  // namespace kvforge
