#pragma once
// Documents for perplexity and training text: a plain text file is one document; a JSONL file holds one per line.
// Torch-free, below both the harness and the trainers that read them.
#include <string>
#include <vector>

namespace kvforge::tasks {

// The documents of a text file (one document) or a JSONL file ({"text"} or {"prompt","answer"} per line,
// the latter joined); InputError naming the file and line for anything else.
std::vector<std::string> read_documents(const std::string& path);

}  // namespace kvforge::tasks
