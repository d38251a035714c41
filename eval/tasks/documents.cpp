#include "eval/tasks/documents.h"

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/input_error.h"

namespace kvforge::tasks {

std::vector<std::string> read_documents(const std::string& path) {
  std::ifstream file(path);
  if (!file) fail_input(path, "file", "cannot be read");
  std::vector<std::string> documents;
  const bool jsonl = path.size() >= 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0;
  if (!jsonl) {
    std::stringstream text;
    text << file.rdbuf();
    documents.push_back(text.str());
    return documents;
  }
  int64_t line_number = 0;
  for (std::string line; std::getline(file, line);) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string field = "line " + std::to_string(line_number);
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& error) {
      fail_input(path, field, std::string("expected a JSON object: ") + error.what());
    }
    if (record.is_object() && record.contains("text") && record["text"].is_string()) {
      documents.push_back(record["text"].get<std::string>());
    } else if (record.is_object() && record.contains("prompt") && record.contains("answer") &&
               record["prompt"].is_string() && record["answer"].is_string()) {
      documents.push_back(record["prompt"].get<std::string>() + record["answer"].get<std::string>());
    } else {
      fail_input(path, field, "expected {\"text\": string} or {\"prompt\": string, \"answer\": string}");
    }
  }
  if (documents.empty()) fail_input(path, "file", "holds no documents");
  return documents;
}

}  // namespace kvforge::tasks
