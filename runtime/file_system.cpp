#include "runtime/file_system.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ftw.h>
#include <stdexcept>
#include <sys/stat.h>

namespace kvforge {
namespace {

int remove_entry(const char* path, const struct stat*, int, struct FTW*) { return std::remove(path) == 0 ? 0 : -1; }

}  // namespace

void remove_tree(const std::string& path) {
  struct stat info {};
  if (lstat(path.c_str(), &info) != 0) return;
  // Depth first (children before their directory), without following symbolic links.
  if (nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
    throw std::runtime_error("cannot remove " + path + ": " + std::strerror(errno));
}

}  // namespace kvforge
