#include "runtime/byte_level.h"

#include <array>

namespace kvforge {
namespace {

// Stand-ins are 0..255 or 256..323, so one table covers every char of the alphabet.
constexpr char32_t kAlphabetEnd = 256 + 68;
constexpr int16_t kNotInAlphabet = -1;

bool prints_as_itself(int byte) {
  return (byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || (byte >= 174 && byte <= 255);
}

struct Alphabet {
  std::array<char32_t, 256> char_of_byte{};
  std::array<int16_t, kAlphabetEnd> byte_of_char{};
  // The UTF-8 of each stand-in, so encoding a byte is one append.
  std::array<std::string, 256> utf8_of_byte;

  Alphabet() {
    byte_of_char.fill(kNotInAlphabet);
    char32_t next_extra = 256;
    for (int byte = 0; byte < 256; ++byte) {
      const char32_t code_point = prints_as_itself(byte) ? static_cast<char32_t>(byte) : next_extra++;
      char_of_byte[byte] = code_point;
      byte_of_char[code_point] = static_cast<int16_t>(byte);
      append_utf8(code_point, utf8_of_byte[byte]);
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet instance;
  return instance;
}

bool is_continuation(unsigned char byte) { return (byte & 0xC0) == 0x80; }

}  // namespace

char32_t byte_to_char(uint8_t byte) { return alphabet().char_of_byte[byte]; }

std::optional<uint8_t> char_to_byte(char32_t code_point) {
  if (code_point >= kAlphabetEnd) return std::nullopt;
  const int16_t byte = alphabet().byte_of_char[code_point];
  if (byte == kNotInAlphabet) return std::nullopt;
  return static_cast<uint8_t>(byte);
}

std::string bytes_to_byte_level(std::string_view bytes) {
  const Alphabet& table = alphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char byte : bytes) out += table.utf8_of_byte[static_cast<unsigned char>(byte)];
  return out;
}

std::optional<std::string> byte_level_to_bytes(std::string_view text) {
  if (find_invalid_utf8(text) != text.size()) return std::nullopt;
  std::string out;
  out.reserve(text.size());
  size_t offset = 0;
  while (offset < text.size()) {
    size_t length = 0;
    const std::optional<uint8_t> byte = char_to_byte(decode_utf8_char(text, offset, length));
    if (!byte) return std::nullopt;
    out += static_cast<char>(*byte);
    offset += length;
  }
  return out;
}

void append_utf8(char32_t code_point, std::string& out) {
  if (code_point < 0x80) {
    out += static_cast<char>(code_point);
  } else if (code_point < 0x800) {
    out += static_cast<char>(0xC0 | (code_point >> 6));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else if (code_point < 0x10000) {
    out += static_cast<char>(0xE0 | (code_point >> 12));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (code_point >> 18));
    out += static_cast<char>(0x80 | ((code_point >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  }
}

size_t find_invalid_utf8(std::string_view text) {
  const auto* data = reinterpret_cast<const unsigned char*>(text.data());
  const size_t size = text.size();
  size_t offset = 0;
  while (offset < size) {
    const unsigned char lead = data[offset];
    if (lead < 0x80) {
      ++offset;
      continue;
    }
    size_t length = 0;
    // The allowed range of the second byte rules out overlong forms, surrogates and code points past U+10FFFF.
    unsigned char second_min = 0x80;
    unsigned char second_max = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      if (lead == 0xE0) second_min = 0xA0;
      if (lead == 0xED) second_max = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      if (lead == 0xF0) second_min = 0x90;
      if (lead == 0xF4) second_max = 0x8F;
    } else {
      return offset;
    }
    if (size - offset < length) return offset;
    if (data[offset + 1] < second_min || data[offset + 1] > second_max) return offset;
    for (size_t i = 2; i < length; ++i) {
      if (!is_continuation(data[offset + i])) return offset;
    }
    offset += length;
  }
  return size;
}

bool is_unicode_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

char32_t decode_utf8_char(std::string_view text, size_t offset, size_t& length) {
  const auto* data = reinterpret_cast<const unsigned char*>(text.data()) + offset;
  const unsigned char lead = data[0];
  if (lead < 0x80) {
    length = 1;
    return lead;
  }
  if (lead < 0xE0) {
    length = 2;
    return (char32_t{lead & 0x1Fu} << 6) | (data[1] & 0x3F);
  }
  if (lead < 0xF0) {
    length = 3;
    return (char32_t{lead & 0x0Fu} << 12) | (char32_t{data[1] & 0x3Fu} << 6) | (data[2] & 0x3F);
  }
  length = 4;
  return (char32_t{lead & 0x07u} << 18) | (char32_t{data[1] & 0x3Fu} << 12) | (char32_t{data[2] & 0x3Fu} << 6) |
         (data[3] & 0x3F);
}

}  // namespace kvforge
