#pragma once
// Added tokens (special tokens such as "<|endoftext|>" and any extra words) as Hugging Face tokenizers finds them:
// matched in the text before the pre-tokenizer runs, leftmost-longest, honouring lstrip, rstrip and single_word.
// Internal to the tokenizer.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/tokenizer_regex.h"

namespace kvforge::detail {

// Segment::added_id of plain text.
constexpr int32_t kNoToken = -1;

// Rust regex's \w, which HF uses to decide whether an added token with single_word stands alone.
inline constexpr const char* kRustWordChar = R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])";

struct AddedToken {
  std::string content;  // as matched: for a normalized token, its content after the normalizer
  int32_t id = kNoToken;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = true;
};

// A part of the input: either plain text for the normalizer, pre-tokenizer and BPE, or one added token.
struct Segment {
  std::string_view text;
  int32_t added_id = kNoToken;
};

// Leftmost-longest search over a set of added tokens (a byte trie), as HF's aho-corasick automaton does.
class AddedTokenMatcher {
 public:
  // Every token's content must be non-empty.
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);

  // Splits every plain segment further around these tokens (HF's AddedVocabulary::find_matches). `word_char`
  // is kRustWordChar compiled, for single_word.
  std::vector<Segment> split(const std::vector<Segment>& segments, const Regex& word_char) const;

 private:
  // Longest token starting at `at`, as an index into tokens_, or kNoToken.
  int32_t longest_at(std::string_view text, size_t at, size_t& length) const;
  void split_one(std::string_view text, const Regex& word_char, std::vector<Segment>& out) const;

  std::vector<AddedToken> tokens_;
  std::unordered_map<uint64_t, int32_t> edges_;  // (node, byte) -> child node
  std::vector<int32_t> terminal_;                // node -> index of the token ending there
  std::array<bool, 256> first_bytes_{};          // skips most positions without touching the trie
};

}  // namespace kvforge::detail
