#include "runtime/input_error.h"

namespace kvforge {

void fail_input(const std::string& file, const std::string& field, const std::string& problem) {
  std::string message = file;
  if (!field.empty()) message += ": " + field;
  message += ": " + problem;
  throw InputError(message);
}

}  // namespace kvforge
