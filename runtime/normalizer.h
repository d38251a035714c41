#pragma once
// Hugging Face's normalizers that the supported tokenizer.json files use, applied as a chain: the Unicode normal
// forms NFC, NFD, NFKC and NFKD (through utf8proc; Qwen2 asks for NFC, so "e" + U+0301 encodes as "é" does), and
// the SentencePiece-style Prepend, Replace and Strip (Llama 2's Prepend("▁") + Replace(" ", "▁") turns spaces into
// the metaspace char before BPE sees them). Internal to the tokenizer.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer_regex.h"

namespace kvforge::detail {

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };

// One normalizer of the chain (a Sequence is flattened into its steps).
struct NormalizeStep {
  enum class Kind { kForm, kPrepend, kReplace, kStrip };
  Kind kind = Kind::kForm;
  NormalForm form = NormalForm::kNfc;  // kForm
  std::string text;                    // kPrepend: what goes in front; kReplace: what each match becomes
  std::string literal;                 // kReplace with a String pattern (never empty)
  std::optional<Regex> regex;          // kReplace with a Regex pattern
  bool strip_left = false;             // kStrip: leading Unicode whitespace goes
  bool strip_right = false;            // kStrip: trailing Unicode whitespace goes
};

// `text` (valid UTF-8) through each step in turn; no steps leave it as it is. The (practically unreachable)
// failures of utf8proc other than running out of memory are InputErrors naming `source_name`.
std::string normalize(std::string_view text, const std::vector<NormalizeStep>& steps, const std::string& source_name);

}  // namespace kvforge::detail
