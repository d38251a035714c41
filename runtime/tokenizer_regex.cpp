#include "runtime/tokenizer_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <new>
#include <nlohmann/json.hpp>

#include "runtime/byte_level.h"
#include "runtime/input_error.h"

namespace kvforge::detail {
namespace {

// HF runs patterns with Oniguruma, whose \s is Unicode White_Space. PCRE2's \s also takes U+180E, so \s and \S
// are rewritten to this explicit list (the same set Rust's char::is_whitespace uses).
constexpr const char* kOnigSpaceMembers =
    R"(\t\n\x{0B}\f\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

// Spells out \s and \S (see kOnigSpaceMembers); everything else passes through. A \S inside a class is left as
// PCRE2's, which differs from Oniguruma only on U+180E.
std::string onig_to_pcre2(const std::string& pattern) {
  const std::string members = kOnigSpaceMembers;
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char escaped = pattern[++i];
      if (escaped == 'Q') {  // \Q...\E is literal text: copy it untouched.
        const size_t quote_end = pattern.find("\\E", i);
        const size_t stop = quote_end == std::string::npos ? pattern.size() : quote_end + 2;
        out += pattern.substr(i - 1, stop - (i - 1));
        i = stop - 1;
      } else if (escaped == 's') {
        out += in_class ? members : "[" + members + "]";
      } else if (escaped == 'S' && !in_class) {
        out += "[^" + members + "]";
      } else {
        out += c;
        out += escaped;
      }
      continue;
    }
    out += c;
    if (!in_class && c == '[') {
      in_class = true;
      // A ']' first in a class (after an optional '^') is a literal, not the end.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
    } else if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      const size_t posix_end = pattern.find(":]", i + 2);  // [:alpha:] inside a class
      if (posix_end != std::string::npos) {
        out += pattern.substr(i + 1, posix_end + 2 - (i + 1));
        i = posix_end + 1;
      }
    } else if (in_class && c == ']') {
      in_class = false;
    }
  }
  return out;
}

std::string pcre2_message(int error_code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(error_code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

struct Regex::Compiled {
  explicit Compiled(pcre2_code* compiled_code) : code(compiled_code) {}
  ~Compiled() { pcre2_code_free(code); }
  Compiled(const Compiled&) = delete;
  Compiled& operator=(const Compiled&) = delete;
  pcre2_code* code;
};

Regex::Regex(const std::string& pattern, const std::string& source_name, const std::string& field)
    : source_name_(source_name), field_(field) {
  const std::string translated = onig_to_pcre2(pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  // PCRE2's \C matches one byte, even inside a multi-byte char (Oniguruma has no such escape). The pieces it cut
  // would reach later steps as invalid UTF-8, which pcre2_match (told to skip the UTF check) and decode_utf8_char
  // read past the end of: NEVER_BACKSLASH_C turns such a pattern into a compile error.
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    fail_input(source_name, field,
               "regex " + nlohmann::json(pattern).dump() + " does not compile: " + pcre2_message(error_code));
  }
  // Best effort: where JIT is unavailable, pcre2_match interprets.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  compiled_ = std::make_shared<const Compiled>(code);
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  const pcre2_code* code = compiled_->code;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match_data(
      pcre2_match_data_create_from_pattern(code, nullptr), pcre2_match_data_free);
  if (!match_data) throw std::bad_alloc();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::vector<std::pair<size_t, size_t>> matches;
  size_t start = 0;
  while (start <= text.size()) {
    int rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, match_data.get(), nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {  // The interpreter keeps its backtracking on the heap instead.
      rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, match_data.get(), nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) fail_input(source_name_, field_, "regex match failed on the input text: " + pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data.get());
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (end < begin || begin < start) break;  // Only \K tricks produce these; stop rather than loop.
    matches.emplace_back(begin, end);
    if (end > begin) {
      start = end;
    } else if (end < text.size()) {  // An empty match: step over one char so the scan moves on.
      size_t length = 0;
      decode_utf8_char(text, end, length);
      start = end + length;
    } else {
      break;
    }
  }
  return matches;
}

bool Regex::matches_whole(std::string_view text) const {
  const auto matches = find_all(text);
  return !matches.empty() && matches.front().first == 0 && matches.front().second == text.size();
}

}  // namespace kvforge::detail
