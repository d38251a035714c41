#pragma once
// What a run tells the person watching it and the files it leaves: a progress bar on a terminal
// (step, loss, tokens/s, ETA), plain periodic lines otherwise, and metrics.jsonl with one record
// per step. Only rank 0 reports.
#include <chrono>
#include <fstream>
#include <map>
#include <string>

namespace kvforge {

class RunLog {
 public:
  // `metrics_path` empty = no file. `enabled` false (ranks > 0) silences everything.
  RunLog(const std::string& metrics_path, int64_t total_steps, int64_t log_every, bool enabled, bool append);

  // One finished step: written to metrics.jsonl, shown on the bar or every log_every steps.
  void step(int64_t step, const std::map<std::string, double>& values, int64_t tokens);
  // A free-form line that does not break the progress bar.
  void note(const std::string& text);
  void finish();

 private:
  std::ofstream metrics_;
  int64_t total_steps_;
  int64_t log_every_;
  bool enabled_;
  bool terminal_;
  bool bar_open_ = false;
  int64_t first_step_ = -1;
  int64_t tokens_ = 0;
  std::chrono::steady_clock::time_point start_;
};

// Rewrites a metrics.jsonl (atomically) keeping only the records of steps before `step`; a missing file is fine.
void keep_records_before(const std::string& metrics_path, int64_t step);

}  // namespace kvforge
