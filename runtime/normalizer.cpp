#include "runtime/normalizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <new>

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

}  // namespace

std::string normalize(std::string_view text, const std::vector<NormalForm>& forms, const std::string& source_name) {
  std::string out(text);
  // ASCII is the same in every form, and most text is mostly ASCII: skip utf8proc's allocation for it.
  if (forms.empty() || std::all_of(out.begin(), out.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; }))
    return out;
  for (const NormalForm form : forms) {
    utf8proc_uint8_t* mapped = nullptr;
    const utf8proc_ssize_t length = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(out.data()),
                                                 static_cast<utf8proc_ssize_t>(out.size()), &mapped, options_of(form));
    const std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(mapped, &std::free);
    if (length == UTF8PROC_ERROR_NOMEM) throw std::bad_alloc();
    if (length < 0) fail_input(source_name, "normalizer", std::string("utf8proc failed: ") + utf8proc_errmsg(length));
    out.assign(reinterpret_cast<const char*>(mapped), static_cast<size_t>(length));
  }
  return out;
}

}  // namespace kvforge::detail
