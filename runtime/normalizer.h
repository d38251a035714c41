#pragma once
// Unicode normalization as Hugging Face's NFC, NFD, NFKC and NFKD normalizers (and a Sequence of them) do it,
// through utf8proc. Qwen2's tokenizer.json, for one, asks for NFC: "e" + U+0301 must encode as "é" does.
// Internal to the tokenizer.
#include <string>
#include <string_view>
#include <vector>

namespace kvforge::detail {

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };

// `text` (valid UTF-8) in each of `forms` in turn; an empty `forms` leaves it as it is. The (practically
// unreachable) failures of utf8proc other than running out of memory are InputErrors naming `source_name`.
std::string normalize(std::string_view text, const std::vector<NormalForm>& forms, const std::string& source_name);

}  // namespace kvforge::detail
