#pragma once
// Reads a Hugging Face tokenizer.json for byte-level BPE (GPT-2, Llama 3, Qwen2 style) or SentencePiece-style BPE
// (Llama 2, Mistral v0.x, Mixtral style) and encodes/decodes exactly as the `tokenizers` library does. Torch-free.
//
// Supported content (anything else is an InputError naming the field):
//   model          BPE: vocab, merges ("a b" strings or ["a", "b"] pairs), ignore_merges, unk_token, fuse_unk,
//                  byte_fallback (a char outside the vocab becomes its UTF-8 bytes as "<0xXX>" tokens); no dropout,
//                  continuing_subword_prefix or end_of_word_suffix. Other model types (Unigram, WordPiece,
//                  WordLevel) are rejected by name.
//   normalizer     null, NFC, NFD, NFKC, NFKD, Prepend, Replace (String or Regex pattern), Strip, Sequence of those
//                  (not applied to non-normalized added tokens)
//   pre_tokenizer  null, ByteLevel, Metaspace (replacement, prepend_scheme always/first/never or the older
//                  add_prefix_space, split), Split (Regex or String pattern, any behavior, invert), Digits, Sequence
//                  of those
//   added_tokens   matched first, leftmost-longest, honouring lstrip, rstrip, single_word and normalized
//   post_processor null, ByteLevel, TemplateProcessing (its "single" template), Sequence of those
//   decoder        null (tokens joined by spaces), ByteLevel, Metaspace, Replace (String or Regex pattern),
//                  ByteFallback, Fuse, Strip (content, start, stop), Sequence of those
//   truncation, padding  null (kvforge neither truncates nor pads in the tokenizer)
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kvforge {

namespace detail {
struct TokenizerData;  // defined in tokenizer_data.h
}  // namespace detail

class Tokenizer {
 public:
  // Reads a Hugging Face tokenizer.json; bad or unsupported content throws InputError naming the JSON field,
  // e.g. "model.merges[12]".
  static Tokenizer from_file(const std::string& path);
  // `source_name` stands in for the file name in error messages.
  static Tokenizer from_json_text(const std::string& json_text, const std::string& source_name);

  // Throws InputError when `text` is not valid UTF-8 (HF tokenizers takes only valid UTF-8 too).
  // add_special_tokens applies the post_processor template (e.g. Llama 3's BOS).
  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens = true) const;
  // Ids that name no token are skipped, as HF does. Where the ids cut a multi-byte char (ByteLevel chars or
  // ByteFallback "<0xXX>" tokens), the bytes are kept as they are (HF would put U+FFFD there), so decoding a stream
  // piece by piece and joining the pieces gives the same bytes as decoding it whole (up to decoders that look at
  // the first token, Strip and Metaspace, which act on each piece's first token).
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

  int64_t vocab_size() const;  // max id + 1 over vocab and added tokens
  std::optional<int64_t> token_to_id(const std::string& token) const;
  std::optional<std::string> id_to_token(int64_t id) const;
  // True for added tokens marked "special": true (the ones decode(ids, true) drops).
  bool is_special(int64_t id) const;

  // Built by from_json_text; holds what was read.
  explicit Tokenizer(std::shared_ptr<const detail::TokenizerData> data);

 private:
  // Shared and immutable (apart from its guarded cache), so copies are cheap and safe across threads.
  std::shared_ptr<const detail::TokenizerData> data_;
};

// The byte-level tokenizer of kvforge's built-in tiny model, as tokenizer.json text that both
// Tokenizer::from_json_text and Hugging Face `tokenizers` read: one token per byte (256 ids, in byte order, as
// the byte-level unicode chars), no merges, then the given special tokens as added tokens (ids 256, 257, ...),
// ByteLevel pre-tokenizer with use_regex=false, ByteLevel decoder, no post-processor. Encoding any UTF-8 text
// gives its bytes. Throws std::invalid_argument for an empty or repeated special token, or one that is a byte.
std::string byte_tokenizer_json(const std::vector<std::string>& special_tokens);

}  // namespace kvforge
