#include "runtime/decoder.h"

#include <utility>

#include "runtime/byte_level.h"

namespace kvforge::detail {
namespace {

using Tokens = std::vector<std::string>;

std::string joined(const Tokens& tokens, const std::string& separator) {
  std::string out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0) out += separator;
    out += tokens[i];
  }
  return out;
}

// Every occurrence of `from` in `token` replaced by `to`.
std::string replaced(const std::string& token, const std::string& from, const std::string& to) {
  std::string out;
  size_t copied = 0;
  for (size_t at = token.find(from); at != std::string::npos; at = token.find(from, at + from.size())) {
    out.append(token, copied, at - copied);
    out += to;
    copied = at + from.size();
  }
  out.append(token, copied, std::string::npos);
  return out;
}

Tokens replace_each(const DecodeStep& step, Tokens tokens) {
  for (std::string& token : tokens) {
    if (!step.regex) {
      token = replaced(token, step.literal, step.content);
      continue;
    }
    std::string out;
    size_t copied = 0;
    for (const auto& [begin, end] : step.regex->find_all(token)) {
      out.append(token, copied, begin - copied);
      out += step.content;
      copied = end;
    }
    out.append(token, copied, std::string::npos);
    token = std::move(out);
  }
  return tokens;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The byte a "<0xXX>" token stands for, as HF reads it: six chars, two hex digits (Rust's from_str_radix also takes
// a '+' before a single digit), any case.
std::optional<char> byte_of_token(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return std::nullopt;
  const int high = token[3] == '+' ? 0 : hex_value(token[3]);
  const int low = hex_value(token[4]);
  if (high < 0 || low < 0) return std::nullopt;
  return static_cast<char>(high * 16 + low);
}

// Runs of byte tokens become the text they spell, one token per run.
Tokens fall_back_to_bytes(Tokens tokens) {
  Tokens out;
  std::string pending_bytes;
  bool pending = false;
  for (std::string& token : tokens) {
    if (const std::optional<char> byte = byte_of_token(token)) {
      pending_bytes += *byte;
      pending = true;
      continue;
    }
    if (pending) out.push_back(std::move(pending_bytes));
    pending_bytes.clear();
    pending = false;
    out.push_back(std::move(token));
  }
  if (pending) out.push_back(std::move(pending_bytes));
  return out;
}

Tokens strip_each(const DecodeStep& step, Tokens tokens) {
  const std::string& content = step.content;
  for (std::string& token : tokens) {
    size_t begin = 0;
    for (size_t i = 0; i < step.strip_start && token.compare(begin, content.size(), content) == 0; ++i) {
      begin += content.size();
    }
    size_t end = token.size();
    for (size_t i = 0; i < step.strip_stop && end >= begin + content.size() &&
                       token.compare(end - content.size(), content.size(), content) == 0;
         ++i) {
      end -= content.size();
    }
    token = token.substr(begin, end - begin);
  }
  return tokens;
}

// The replacement char back to a space, except in the first token, where it stands for the prepended space.
Tokens metaspace_each(const DecodeStep& step, Tokens tokens) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    const bool drop = i == 0 && step.drops_first_replacement;
    tokens[i] = replaced(tokens[i], step.replacement, drop ? "" : " ");
  }
  return tokens;
}

Tokens byte_level_all(Tokens tokens) {
  std::string bytes;
  // As HF, a token with a char outside the alphabet (e.g. an added token with a plain space) stays whole.
  for (const std::string& token : tokens) bytes += byte_level_to_bytes(token).value_or(token);
  return Tokens{std::move(bytes)};
}

}  // namespace

std::string decode_tokens(Tokens tokens, const Decoder& decoder) {
  if (!decoder.present) return joined(tokens, " ");
  for (const DecodeStep& step : decoder.steps) {
    switch (step.kind) {
      case DecodeStep::Kind::kByteLevel:
        tokens = byte_level_all(std::move(tokens));
        break;
      case DecodeStep::Kind::kReplace:
        tokens = replace_each(step, std::move(tokens));
        break;
      case DecodeStep::Kind::kByteFallback:
        tokens = fall_back_to_bytes(std::move(tokens));
        break;
      case DecodeStep::Kind::kFuse:
        tokens = Tokens{joined(tokens, "")};
        break;
      case DecodeStep::Kind::kStrip:
        tokens = strip_each(step, std::move(tokens));
        break;
      case DecodeStep::Kind::kMetaspace:
        tokens = metaspace_each(step, std::move(tokens));
        break;
    }
  }
  return joined(tokens, "");
}

}  // namespace kvforge::detail
