#include "cli/token_ids.h"

#include <sstream>
#include <stdexcept>

#include "runtime/input_error.h"

namespace kvforge {

std::vector<int64_t> parse_token_ids(const std::string& text, int64_t vocab_size, const std::string& flag) {
  std::vector<int64_t> ids;
  std::istringstream items(text);
  for (std::string item; std::getline(items, item, ',');) {
    size_t used = 0;
    int64_t id = -1;
    try {
      id = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size())
      fail_input("command line", flag, "expected comma-separated token ids, got '" + item + "' in '" + text + "'");
    if (id < 0 || id >= vocab_size)
      fail_input("command line", flag,
                 "token id " + item + " is outside the vocabulary [0, " + std::to_string(vocab_size) + ")");
    ids.push_back(id);
  }
  if (ids.empty()) fail_input("command line", flag, "expected at least one token id");
  return ids;
}

}  // namespace kvforge
