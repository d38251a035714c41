#include "trainers/run_log.h"

#include <cstdio>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unistd.h>

#include "runtime/file_system.h"

namespace kvforge {
namespace {

std::string duration_text(double seconds) {
  const long total = static_cast<long>(seconds + 0.5);
  std::ostringstream out;
  if (total >= 3600) out << total / 3600 << "h";
  if (total >= 60) out << (total / 60) % 60 << "m";
  out << total % 60 << "s";
  return out.str();
}

}  // namespace

RunLog::RunLog(const std::string& metrics_path, int64_t total_steps, int64_t log_every, bool enabled, bool append)
    : total_steps_(total_steps),
      log_every_(std::max<int64_t>(log_every, 1)),
      enabled_(enabled),
      terminal_(enabled && isatty(fileno(stderr))),
      start_(std::chrono::steady_clock::now()) {
  if (enabled && !metrics_path.empty())
    metrics_.open(metrics_path, append ? std::ios::app : std::ios::trunc);
}

void RunLog::step(int64_t step, const std::map<std::string, double>& values, int64_t tokens) {
  if (!enabled_) return;
  if (first_step_ < 0) first_step_ = step;
  tokens_ += tokens;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double tokens_per_s = elapsed > 0 ? tokens_ / elapsed : 0.0;
  const int64_t done = step + 1 - first_step_;
  const double eta = done > 0 ? elapsed / done * (total_steps_ - step - 1) : 0.0;
  if (metrics_.is_open()) {
    nlohmann::json record = values;
    record["step"] = step;
    record["tokens"] = tokens;
    record["tokens_per_s"] = tokens_per_s;
    record["elapsed_s"] = elapsed;
    metrics_ << record.dump() << "\n";
    metrics_.flush();
  }
  std::ostringstream line;
  line << "step " << step + 1 << "/" << total_steps_;
  for (const auto& [key, value] : values) line << " | " << key << " " << std::setprecision(4) << value;
  line << " | " << std::fixed << std::setprecision(0) << tokens_per_s << " tok/s | ETA " << duration_text(eta);
  if (terminal_) {
    const int width = 24;
    const int filled = static_cast<int>(width * (step + 1) / std::max<int64_t>(total_steps_, 1));
    std::cerr << "\r[" << std::string(filled, '=') << std::string(width - filled, ' ') << "] " << line.str()
              << "\033[K" << std::flush;
    bar_open_ = true;
  } else if ((step + 1) % log_every_ == 0 || step + 1 == total_steps_) {
    std::cout << line.str() << std::endl;
  }
}

void RunLog::note(const std::string& text) {
  if (!enabled_) return;
  if (bar_open_) std::cerr << "\n";
  bar_open_ = false;
  std::cout << text << std::endl;
}

void keep_records_before(const std::string& metrics_path, int64_t step) {
  std::ifstream in(metrics_path);
  if (!in) return;
  std::string kept;
  for (std::string line; std::getline(in, line);) {
    // A line cut by the interruption, or one without a step, is not a record of a finished step.
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_object() && record.contains("step") && record["step"].is_number_integer() &&
        record["step"].get<int64_t>() < step)
      kept += line + "\n";
  }
  in.close();
  write_text_atomically(metrics_path, kept);
}

void RunLog::finish() {
  if (bar_open_) std::cerr << "\n";
  bar_open_ = false;
}

}  // namespace kvforge
