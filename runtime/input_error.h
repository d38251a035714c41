#pragma once
// Errors caused by what the user handed us (files, configs, flags). They carry one line that names
// the file, the field and what was expected, so the CLI can print it and exit non-zero.
#include <stdexcept>
#include <string>

namespace kvforge {

class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws InputError("<file>: <field>: <problem>").
[[noreturn]] void fail_input(const std::string& file, const std::string& field, const std::string& problem);

}  // namespace kvforge
