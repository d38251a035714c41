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

// Output paths are checked before any work, so a bad `--out` or `out=` fails at once and names where it came from:
// `source` and `field` open the InputError ("command line: --out: ...").
// A folder a command creates or fills: it exists as a folder, or it can be made (its nearest existing ancestor is a
// writable folder). Creates nothing.
void check_output_folder(const std::string& path, const std::string& source, const std::string& field);
// check_output_folder, then the folder and its parents are created.
void make_output_folder(const std::string& path, const std::string& source, const std::string& field);
// A file a command writes (atomically, beside it): not a folder, and its parent is an existing writable folder.
void check_output_file(const std::string& path, const std::string& source, const std::string& field);

}  // namespace kvforge
