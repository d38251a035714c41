#include "runtime/file_system.h"

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>

#include "runtime/input_error.h"

namespace kvforge {
namespace {

int remove_entry(const char* path, const struct stat*, int, struct FTW*) { return std::remove(path) == 0 ? 0 : -1; }

enum class PathKind { kMissing, kFolder, kOther };

PathKind kind_of(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return PathKind::kMissing;
  return S_ISDIR(info.st_mode) ? PathKind::kFolder : PathKind::kOther;
}

// "a/b/c" -> "a/b", "c" -> ".", "/c" -> "/"; trailing slashes are not part of the name.
std::string parent_of(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

void check_writable_folder(const std::string& folder, const std::string& what, const std::string& source,
                           const std::string& field) {
  if (::access(folder.c_str(), W_OK | X_OK) != 0)
    fail_input(source, field, what + ": folder '" + folder + "' is not writable (" + std::strerror(errno) + ")");
}

}  // namespace

void write_text_atomically(const std::string& path, const std::string& content) {
  const std::string temp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot open " + temp + " for writing: " + std::strerror(errno));
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.close();
    if (!out) {
      std::remove(temp.c_str());
      throw std::runtime_error("cannot write " + temp);
    }
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(temp.c_str());
    throw std::runtime_error("cannot rename " + temp + " to " + path + ": " + std::strerror(error));
  }
}

void check_output_folder(const std::string& path, const std::string& source, const std::string& field) {
  if (path.empty()) fail_input(source, field, "expected a folder path, got an empty one");
  switch (kind_of(path)) {
    case PathKind::kFolder:
      check_writable_folder(path, "'" + path + "'", source, field);
      return;
    case PathKind::kOther:
      fail_input(source, field, "'" + path + "' is a file; expected a folder (created if missing)");
    case PathKind::kMissing:
      break;
  }
  std::string ancestor = parent_of(path);
  while (kind_of(ancestor) == PathKind::kMissing && ancestor != "." && ancestor != "/") ancestor = parent_of(ancestor);
  if (kind_of(ancestor) != PathKind::kFolder)
    fail_input(source, field, "cannot create folder '" + path + "': '" + ancestor + "' is a file, not a folder");
  check_writable_folder(ancestor, "cannot create folder '" + path + "'", source, field);
}

void make_output_folder(const std::string& path, const std::string& source, const std::string& field) {
  check_output_folder(path, source, field);
  std::error_code error;
  std::filesystem::create_directories(path, error);
  if (error) fail_input(source, field, "cannot create folder '" + path + "': " + error.message());
}

void check_output_file(const std::string& path, const std::string& source, const std::string& field) {
  if (path.empty()) fail_input(source, field, "expected a file path, got an empty one");
  if (kind_of(path) == PathKind::kFolder)
    fail_input(source, field, "'" + path + "' is a folder; expected the path of the file to write");
  const std::string parent = parent_of(path);
  if (kind_of(parent) != PathKind::kFolder)
    fail_input(source, field, "cannot write '" + path + "': folder '" + parent + "' does not exist");
  check_writable_folder(parent, "cannot write '" + path + "'", source, field);
}

void remove_tree(const std::string& path) {
  struct stat info {};
  if (lstat(path.c_str(), &info) != 0) return;
  // Depth first (children before their directory), without following symbolic links.
  if (nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
    throw std::runtime_error("cannot remove " + path + ": " + std::strerror(errno));
}

}  // namespace kvforge
