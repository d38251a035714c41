#include "runtime/normalizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <new>

#include "runtime/byte_level.h"
#include "runtime/input_error.h"

namespace kvforge::detail {
namespace {

utf8proc_option_t options_of(NormalForm form) {
  // STABLE is what utf8proc_NFC and friends pass too. No NULLTERM: the length is given, so a NUL byte in the
  // text is a char like any other instead of its end.
  switch (form) {
    case NormalForm::kNfc:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    case NormalForm::kNfd:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
    case NormalForm::kNfkc:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
    case NormalForm::kNfkd:
      return static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  }
  return UTF8PROC_STABLE;
}

void apply_form(NormalForm form, std::string& text, const std::string& source_name) {
  // ASCII is the same in every form, and most text is mostly ASCII: skip utf8proc's allocation for it.
  if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) return;
  utf8proc_uint8_t* mapped = nullptr;
  const utf8proc_ssize_t length = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                               static_cast<utf8proc_ssize_t>(text.size()), &mapped, options_of(form));
  const std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(mapped, &std::free);
  if (length == UTF8PROC_ERROR_NOMEM) throw std::bad_alloc();
  if (length < 0) fail_input(source_name, "normalizer", std::string("utf8proc failed: ") + utf8proc_errmsg(length));
  text.assign(reinterpret_cast<const char*>(mapped), static_cast<size_t>(length));
}

void apply_replace(const NormalizeStep& step, std::string& text) {
  std::string out;
  size_t copied = 0;
  bool matched = false;
  const auto replace = [&](size_t begin, size_t end) {
    matched = true;
    out.append(text, copied, begin - copied);
    out += step.text;
    copied = end;
  };
  if (step.regex) {
    for (const auto& [begin, end] : step.regex->find_all(text)) replace(begin, end);
  } else {
    for (size_t at = text.find(step.literal); at != std::string::npos;
         at = text.find(step.literal, at + step.literal.size())) {
      replace(at, at + step.literal.size());
    }
  }
  if (!matched) return;
  out.append(text, copied, std::string::npos);
  text.swap(out);
}

void apply_strip(const NormalizeStep& step, std::string& text) {
  size_t begin = 0;
  size_t end = text.size();
  while (step.strip_left && begin < end) {
    size_t length = 0;
    if (!is_unicode_whitespace(decode_utf8_char(text, begin, length))) break;
    begin += length;
  }
  while (step.strip_right && end > begin) {
    size_t char_begin = end - 1;
    while (char_begin > begin && (static_cast<unsigned char>(text[char_begin]) & 0xC0) == 0x80) --char_begin;
    size_t length = 0;
    if (!is_unicode_whitespace(decode_utf8_char(text, char_begin, length))) break;
    end = char_begin;
  }
  text = text.substr(begin, end - begin);
}

}  // namespace

std::string normalize(std::string_view text, const std::vector<NormalizeStep>& steps, const std::string& source_name) {
  std::string out(text);
  for (const NormalizeStep& step : steps) {
    switch (step.kind) {
      case NormalizeStep::Kind::kForm:
        apply_form(step.form, out, source_name);
        break;
      case NormalizeStep::Kind::kPrepend:
        if (!out.empty()) out.insert(0, step.text);  // HF prepends nothing to an empty text
        break;
      case NormalizeStep::Kind::kReplace:
        apply_replace(step, out);
        break;
      case NormalizeStep::Kind::kStrip:
        apply_strip(step, out);
        break;
    }
  }
  return out;
}

}  // namespace kvforge::detail
