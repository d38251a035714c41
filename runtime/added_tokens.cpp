#include "runtime/added_tokens.h"

#include <algorithm>
#include <utility>

#include "runtime/byte_level.h"

namespace kvforge::detail {
namespace {

uint64_t edge_key(int32_t node, char byte) {
  return (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(byte);
}

size_t leading_whitespace(std::string_view text) {
  size_t offset = 0;
  while (offset < text.size()) {
    size_t length = 0;
    if (!is_unicode_whitespace(decode_utf8_char(text, offset, length))) break;
    offset += length;
  }
  return offset;
}

size_t trailing_whitespace(std::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    size_t begin = end - 1;
    while (begin > 0 && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) --begin;
    size_t length = 0;
    if (!is_unicode_whitespace(decode_utf8_char(text, begin, length))) break;
    end = begin;
  }
  return text.size() - end;
}

bool starts_with_word_char(std::string_view text, const Regex& word_char) {
  if (text.empty()) return false;
  size_t length = 0;
  decode_utf8_char(text, 0, length);
  return word_char.matches_whole(text.substr(0, length));
}

bool ends_with_word_char(std::string_view text, const Regex& word_char) {
  if (text.empty()) return false;
  size_t begin = text.size() - 1;
  while (begin > 0 && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) --begin;
  return word_char.matches_whole(text.substr(begin));
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens)
    : tokens_(std::move(tokens)), terminal_(1, kNoToken) {
  for (size_t index = 0; index < tokens_.size(); ++index) {
    int32_t node = 0;
    for (const char byte : tokens_[index].content) {
      const uint64_t edge = edge_key(node, byte);
      auto it = edges_.find(edge);
      if (it == edges_.end()) {
        it = edges_.emplace(edge, static_cast<int32_t>(terminal_.size())).first;
        terminal_.push_back(kNoToken);
      }
      node = it->second;
    }
    if (terminal_[node] == kNoToken) terminal_[node] = static_cast<int32_t>(index);  // first one listed wins
    first_bytes_[static_cast<unsigned char>(tokens_[index].content[0])] = true;
  }
}

std::vector<Segment> AddedTokenMatcher::split(const std::vector<Segment>& segments, const Regex& word_char) const {
  if (tokens_.empty()) return segments;
  std::vector<Segment> out;
  for (const Segment& segment : segments) {
    if (segment.added_id != kNoToken) {
      out.push_back(segment);
    } else {
      split_one(segment.text, word_char, out);
    }
  }
  return out;
}

int32_t AddedTokenMatcher::longest_at(std::string_view text, size_t at, size_t& length) const {
  int32_t best = kNoToken;
  int32_t node = 0;
  for (size_t i = at; i < text.size(); ++i) {
    const auto it = edges_.find(edge_key(node, text[i]));
    if (it == edges_.end()) break;
    node = it->second;
    if (terminal_[node] != kNoToken) {
      best = terminal_[node];
      length = i + 1 - at;
    }
  }
  return best;
}

void AddedTokenMatcher::split_one(std::string_view text, const Regex& word_char, std::vector<Segment>& out) const {
  size_t emitted = 0;  // text before this is already in `out`
  size_t scan = 0;     // where the automaton resumes; a rejected match is skipped whole, as in HF
  while (scan < text.size()) {
    if (!first_bytes_[static_cast<unsigned char>(text[scan])]) {
      ++scan;
      continue;
    }
    size_t length = 0;
    const int32_t index = longest_at(text, scan, length);
    if (index == kNoToken) {
      ++scan;
      continue;
    }
    const AddedToken& token = tokens_[index];
    size_t begin = scan;
    size_t end = scan + length;
    scan = end;
    if (token.single_word &&
        (ends_with_word_char(text.substr(0, begin), word_char) || starts_with_word_char(text.substr(end), word_char))) {
      continue;
    }
    if (token.lstrip) begin = std::max(emitted, begin - trailing_whitespace(text.substr(0, begin)));
    if (token.rstrip) end += leading_whitespace(text.substr(end));
    if (begin > emitted) out.push_back({text.substr(emitted, begin - emitted), kNoToken});
    out.push_back({text.substr(begin, end - begin), token.id});
    emitted = end;
    scan = end;
  }
  if (emitted < text.size()) out.push_back({text.substr(emitted), kNoToken});
}

}  // namespace kvforge::detail
