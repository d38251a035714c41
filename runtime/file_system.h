#pragma once
// File-system helpers that binaries linked against LibTorch can use safely: libtorch.so exports its
// own copy of std::filesystem, and its remove_all crashes on a non-empty directory, so recursive
// removal goes through POSIX nftw instead. Text outputs are written atomically.
#include <string>

namespace kvforge {

// Writes `content` to a temporary file beside `path`, then renames it into place, so a reader (or a crash)
// never sees a half-written file. Throws std::runtime_error naming the path on failure.
void write_text_atomically(const std::string& path, const std::string& content);

// Removes a file or a directory tree; a missing path is fine. Throws std::runtime_error on failure.
void remove_tree(const std::string& path);

}  // namespace kvforge
