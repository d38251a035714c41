#include "runtime/json_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "runtime/input_error.h"

namespace kvforge {

std::string read_text_file(const std::string& path) {
  struct stat info {};
  if (stat(path.c_str(), &info) != 0) fail_input(path, "", std::string("cannot open: ") + std::strerror(errno));
  if (S_ISDIR(info.st_mode)) fail_input(path, "", "expected a file, found a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_input(path, "", "cannot open for reading");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

nlohmann::json parse_json(const std::string& text, const std::string& source) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    fail_input(source, "", "malformed JSON at byte " + std::to_string(e.byte) + ": " + e.what());
  } catch (const nlohmann::json::exception& e) {  // e.g. a number too large for a double
    fail_input(source, "", std::string("malformed JSON: ") + e.what());
  }
}

nlohmann::json read_json_file(const std::string& path) { return parse_json(read_text_file(path), path); }

std::string json_type_name(const nlohmann::json& value) { return value.type_name(); }

}  // namespace kvforge
