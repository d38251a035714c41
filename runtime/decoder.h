#pragma once
// Hugging Face's decoders that the supported tokenizer.json files use: each step turns the list of token strings
// into a new list (HF's decode_chain), and the last list is joined. ByteLevel turns the byte-level alphabet back
// into bytes; the SentencePiece-style steps are Replace ("▁" back to " "), ByteFallback ("<0xE6>" "<0x9D>"
// "<0xB1>" back to "東"), Fuse (all tokens into one), Strip (a leading space) and Metaspace. Internal to the
// tokenizer; tokenizer_json.cpp builds the steps.
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "runtime/tokenizer_regex.h"

namespace kvforge::detail {

struct DecodeStep {
  enum class Kind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace };
  Kind kind = Kind::kFuse;
  std::string literal;                  // kReplace with a String pattern (never empty)
  std::optional<Regex> regex;           // kReplace with a Regex pattern
  std::string content;                  // kReplace: what each match becomes; kStrip: the char stripped (UTF-8)
  size_t strip_start = 0;               // kStrip: at most this many `content` chars go from the front of each token
  size_t strip_stop = 0;                // kStrip: ... and this many from the back
  std::string replacement;              // kMetaspace: the char that stands for a space (UTF-8)
  bool drops_first_replacement = true;  // kMetaspace: prepend_scheme is not "never"
};

// The decoder, or its absence: HF joins the tokens with spaces when tokenizer.json has no decoder.
struct Decoder {
  bool present = false;
  std::vector<DecodeStep> steps;
};

// `tokens` through the decoder, joined. Where byte tokens (ByteFallback) or byte-level chars (ByteLevel) do not
// make valid UTF-8, e.g. ids that cut a char, the bytes are kept as they are rather than turned into U+FFFD as HF
// does, so that decoding a stream piece by piece and joining the pieces gives the bytes of decoding it whole.
std::string decode_tokens(std::vector<std::string> tokens, const Decoder& decoder);

}  // namespace kvforge::detail
