#pragma once
// File-system helpers that binaries linked against LibTorch can use safely: libtorch.so exports its
// own copy of std::filesystem, and its remove_all crashes on a non-empty directory, so recursive
// removal goes through POSIX nftw instead.
#include <string>

namespace kvforge {

// Removes a file or a directory tree; a missing path is fine. Throws std::runtime_error on failure.
void remove_tree(const std::string& path);

}  // namespace kvforge
