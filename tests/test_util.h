#pragma once
// Small helpers shared by the test files.
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "runtime/input_error.h"

namespace kvforge {
struct LoadedModel;
}

namespace kvforge::testing {

// Fixtures and the kvforge binary are found where the build put them, or where the environment
// variables KVFORGE_FIXTURES / KVFORGE_BINARY say (when the tests run on another machine).
std::string fixture(const std::string& relative);
std::string kvforge_binary();

// The committed tiny base model (models/tiny-base) on the CPU in fp32, loaded once per test binary.
LoadedModel& tiny_base_model();

// A fresh directory under the system temp dir, removed by the caller when it matters.
std::string make_temp_dir(const std::string& tag);

void write_file(const std::string& path, const std::string& bytes);
// The whole file's bytes; a file that cannot be read fails the test (and gives "").
std::string read_file(const std::string& path);

// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it back), or -1.
int free_port();

// Runs a shell command line, returning its exit status and everything it printed.
struct CommandResult {
  int exit_code = -1;
  std::string output;
};
CommandResult run_command(const std::string& command_line);
// The kvforge binary with `arguments` (a shell command line after the binary's path).
CommandResult run_kvforge(const std::string& arguments);

// Bad input: exit code 2 and exactly one line, starting "error: ", holding every fragment.
void expect_one_line_error(const CommandResult& run, std::initializer_list<const char*> fragments);

// Runs `statement`, expects an InputError whose message contains every fragment.
#define EXPECT_INPUT_ERROR(statement, ...)                                     \
  do {                                                                         \
    try {                                                                      \
      statement;                                                               \
      ADD_FAILURE() << "expected InputError from " #statement;                 \
    } catch (const kvforge::InputError& error) {                               \
      for (const char* fragment : {__VA_ARGS__})                               \
        EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) \
            << "message '" << error.what() << "' lacks '" << fragment << "'";  \
    }                                                                          \
  } while (0)

}  // namespace kvforge::testing
