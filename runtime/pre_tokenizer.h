#pragma once
// Pre-tokenization as Hugging Face tokenizers does it: a chain of steps (Split on a regex or a string with HF's
// delimiter behaviours, Digits, ByteLevel, Metaspace) cuts a text into pieces. The ByteLevel step also rewrites
// each piece's bytes into the byte-level alphabet, and Metaspace each space into its replacement char ("▁"), so
// the chain's output is what BPE merges. Internal to the tokenizer; tokenizer_json.cpp builds the steps.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer_regex.h"

namespace kvforge::detail {

// ByteLevel's own split (use_regex=true), GPT-2's pattern.
inline constexpr const char* kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// HF's SplitDelimiterBehavior: what happens to the matched delimiters.
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Where Metaspace puts a replacement char in front of a piece that lacks one: every piece, only a piece at the
// very start of the input text (not one after an added token), or none.
enum class PrependScheme { kAlways, kFirst, kNever };

// One step of the chain. Digits is a kSplit on \p{N} (or \p{N}+), Isolated.
struct PreTokenizeStep {
  enum class Kind { kSplit, kByteLevel, kMetaspace };
  Kind kind = Kind::kSplit;
  std::optional<Regex> regex;  // kSplit with a Regex pattern; kByteLevel with use_regex
  std::string literal;         // kSplit with a String pattern
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;  // kByteLevel
  // kMetaspace: the char spaces become (UTF-8), where it is prepended, and whether each one starts a new piece
  // (HF's split: MergedWithNext on it).
  std::string replacement;
  PrependScheme prepend_scheme = PrependScheme::kAlways;
  bool split = true;
};

// The pieces of `text` after every step in order, each step running on each piece of the one before. `text` must
// not be empty (HF makes no piece of an empty text, so a ByteLevel prefix space must not appear).
// `starts_input` says whether `text` begins the whole input (Metaspace's "first" scheme prepends only there).
std::vector<std::string> pre_tokenize(const std::vector<PreTokenizeStep>& steps, std::string_view text,
                                      bool starts_input);

}  // namespace kvforge::detail
