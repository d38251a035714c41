#pragma once
// Regexes as Hugging Face tokenizers runs them, on PCRE2. tokenizer.json patterns (GPT-2's, Llama 3's split
// regexes) are written for Oniguruma; PCRE2 reads the same syntax, but its \s also takes U+180E, so \s and \S are
// spelled out as Oniguruma's whitespace before compiling. Internal to the tokenizer.
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvforge::detail {

class Regex {
 public:
  // `source_name` and `field` say where the pattern came from: a pattern that does not compile, or (rarely) a match
  // that hits PCRE2's limits, is an InputError naming them.
  Regex(const std::string& pattern, const std::string& source_name, const std::string& field);

  // [begin, end) byte offsets of the successive non-overlapping matches in `text` (valid UTF-8).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

  // Whether the whole of `text` matches (used on one char).
  bool matches_whole(std::string_view text) const;

 private:
  struct Compiled;  // the pcre2_code, kept out of this header
  std::shared_ptr<const Compiled> compiled_;
  std::string source_name_;
  std::string field_;
};

}  // namespace kvforge::detail
