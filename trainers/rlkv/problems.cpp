#include "trainers/rlkv/problems.h"

#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>

#include "eval/tasks/tokenized_samples.h"
#include "runtime/input_error.h"
#include "trainers/task_batches.h"

namespace kvforge::rlkv {

ProblemSource synthetic_problems(const Tokenizer& tokenizer, const std::string& task, int64_t prompt_tokens,
                                 int64_t arithmetic_steps, uint64_t seed) {
  return [&tokenizer, task, prompt_tokens, arithmetic_steps, seed](int64_t step, int64_t micro_batch, int64_t count) {
    const uint64_t draw_seed = mix_seed({seed, static_cast<uint64_t>(step), static_cast<uint64_t>(micro_batch)});
    std::vector<Problem> problems;
    for (tasks::Sample& sample :
         tasks::draw_samples(tokenizer, task, prompt_tokens, count, draw_seed, arithmetic_steps)) {
      auto shared = std::make_shared<tasks::Sample>(std::move(sample));
      problems.push_back({shared->prompt, [shared](const std::string& text) { return tasks::score(*shared, text); }});
    }
    return problems;
  };
}

std::string extract_answer(const std::string& completion, const std::regex& pattern) {
  std::string found;
  for (auto it = std::sregex_iterator(completion.begin(), completion.end(), pattern); it != std::sregex_iterator();
       ++it)
    found = it->size() > 1 ? (*it)[1].str() : (*it)[0].str();
  return found;
}

ProblemSource jsonl_problems(const std::string& path, const std::string& answer_pattern, uint64_t seed) {
  // Compiled once: every rollout's reward uses it.
  std::shared_ptr<const std::regex> pattern;
  try {
    pattern = std::make_shared<const std::regex>(answer_pattern);
  } catch (const std::regex_error& error) {
    fail_input("recipe", "data.answer_pattern", "not a valid regular expression: " + std::string(error.what()));
  }
  std::ifstream file(path);
  if (!file) fail_input(path, "file", "cannot be read");
  auto records = std::make_shared<std::vector<std::pair<std::string, std::string>>>();
  int64_t line_number = 0;
  for (std::string line; std::getline(file, line);) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& error) {
      fail_input(path, "line " + std::to_string(line_number), std::string("expected a JSON object: ") + error.what());
    }
    if (!record.is_object() || !record.contains("prompt") || !record["prompt"].is_string() ||
        !record.contains("answer") || !(record["answer"].is_string() || record["answer"].is_number()))
      fail_input(path, "line " + std::to_string(line_number), "expected {\"prompt\": string, \"answer\": string}");
    const nlohmann::json& answer = record["answer"];
    records->emplace_back(record["prompt"].get<std::string>(),
                          answer.is_string() ? answer.get<std::string>() : answer.dump());
  }
  if (records->empty()) fail_input(path, "file", "holds no problems");
  return [records, pattern, seed](int64_t step, int64_t micro_batch, int64_t count) {
    std::mt19937_64 rng(mix_seed({seed, static_cast<uint64_t>(step), static_cast<uint64_t>(micro_batch)}));
    std::vector<Problem> problems;
    for (int64_t i = 0; i < count; ++i) {
      const auto& [prompt, answer] = (*records)[rng() % records->size()];
      problems.push_back({prompt, [answer, pattern](const std::string& text) {
                            return extract_answer(text, *pattern) == answer ? 1.0 : 0.0;
                          }});
    }
    return problems;
  };
}

}  // namespace kvforge::rlkv
