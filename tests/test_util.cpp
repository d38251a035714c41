#include "tests/test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "runtime/file_system.h"
#include "runtime/model_loader.h"

namespace kvforge::testing {

std::string fixture(const std::string& relative) {
  const char* root = std::getenv("KVFORGE_FIXTURES");
  return std::string(root != nullptr ? root : KVFORGE_FIXTURES) + "/" + relative;
}

std::string kvforge_binary() {
  const char* binary = std::getenv("KVFORGE_BINARY");
  return binary != nullptr ? binary : KVFORGE_BINARY;
}

LoadedModel& tiny_base_model() {
  static LoadedModel model = load_model(fixture("../../models/tiny-base"), at::kCPU, at::kFloat);
  return model;
}

std::string make_temp_dir(const std::string& tag) {
  static std::atomic<int> counter{0};
  auto path = std::filesystem::temp_directory_path() /
              ("kvforge-" + tag + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  remove_tree(path.string());
  std::filesystem::create_directories(path);
  return path.string();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  close(fd);
  return ntohs(address.sin_port);
}

CommandResult run_command(const std::string& command_line) {
  CommandResult result;
  FILE* pipe = popen((command_line + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer{};
  size_t got;
  while ((got = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), got);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

CommandResult run_kvforge(const std::string& arguments) { return run_command(kvforge_binary() + " " + arguments); }

void expect_one_line_error(const CommandResult& run, std::initializer_list<const char*> fragments) {
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_EQ(run.output.rfind("error: ", 0), 0u) << run.output;
  EXPECT_EQ(std::count(run.output.begin(), run.output.end(), '\n'), 1) << run.output;
  for (const char* fragment : fragments) EXPECT_NE(run.output.find(fragment), std::string::npos) << run.output;
}

}  // namespace kvforge::testing
