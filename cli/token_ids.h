#pragma once
// Token ids typed on the command line ("1,2,3"), for the commands that take ids instead of text.
#include <cstdint>
#include <string>
#include <vector>

namespace kvforge {

// "1,2,3" -> {1, 2, 3}, each id in [0, vocab_size); an InputError naming `flag` for anything else.
std::vector<int64_t> parse_token_ids(const std::string& text, int64_t vocab_size, const std::string& flag);

}  // namespace kvforge
