#pragma once
// GPT-2's byte-level alphabet. Byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2) never store raw bytes in
// tokenizer.json: each byte is replaced by one printable Unicode char, so every token is readable text and a
// space shows as 'Ġ'. Bytes that print already (33..126, 161..172, 174..255) stand for themselves; the other
// 68 take the code points 256, 257, ... in byte order.
//
// Also the few UTF-8 helpers the tokenizer needs, since the alphabet is defined in terms of them.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kvforge {

// The code point that stands for `byte`.
char32_t byte_to_char(uint8_t byte);

// The byte that `code_point` stands for; nullopt for a code point outside the alphabet.
std::optional<uint8_t> char_to_byte(char32_t code_point);

// Every byte of `bytes` replaced by the UTF-8 of its stand-in: "a b" -> "aĠb". Accepts any bytes.
std::string bytes_to_byte_level(std::string_view bytes);

// The inverse: "aĠb" -> "a b". nullopt when `text` is not valid UTF-8 or holds a char outside the alphabet
// (e.g. an added token such as "<|eot id|>" written with a plain space).
std::optional<std::string> byte_level_to_bytes(std::string_view text);

// Appends the UTF-8 encoding of `code_point` (which must be a Unicode scalar value).
void append_utf8(char32_t code_point, std::string& out);

// The byte offset of the first invalid UTF-8 sequence in `text` (overlong forms, surrogates and values past
// U+10FFFF count as invalid, as in Rust's str); text.size() when all of it is valid.
size_t find_invalid_utf8(std::string_view text);

// Rust's char::is_whitespace (the White_Space property), which HF's stripping uses.
bool is_unicode_whitespace(char32_t c);

// Decodes the char at `offset` of valid UTF-8 `text`, setting `length` to its byte count.
char32_t decode_utf8_char(std::string_view text, size_t offset, size_t& length);

}  // namespace kvforge
