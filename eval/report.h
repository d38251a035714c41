#pragma once
// What `kvforge eval` measured, and the files it writes from it: report.json (machine-readable),
// report.md (a table read in seconds) and SVG plots (accuracy against KV ratio and against time to first token; needle depth × length).
// Torch-free: the harness fills these structs, this file only formats them.
#include <cstdint>
#include <string>
#include <vector>

namespace kvforge::eval {

// Accuracy of the samples whose queried needle sat at one depth (retrieval tasks only).
struct DepthAccuracy {
  double depth = 0;  // in [0, 1]
  int64_t samples = 0;
  double accuracy = 0;  // mean score in [0, 1]
};

// One policy on one task at one prompt length: every number measured on the same `samples` prompts.
struct CellResult {
  std::string policy;  // the policy's label, e.g. "snapkv:budget=0.25"
  std::string task;
  int64_t length = 0;  // target prompt length in tokens
  int64_t samples = 0;
  double accuracy = 0;                  // mean score in [0, 1]
  double kv_bytes = 0;                  // peak bytes the policy's caches held, per sequence (mean over batches)
  double full_kv_bytes = 0;             // the same for the full cache on the same prompts
  double kv_ratio = 1;                  // kv_bytes / full_kv_bytes
  double ttft_ms = 0;                   // time to first token, per batch of prompts (mean over batches)
  double decode_tokens_per_s = 0;       // tokens after the first, over decode time, whole batches
  int64_t peak_device_bytes = -1;       // peak CUDA memory allocated during the cell; -1 on CPU
  double answer_perplexity = -1;        // teacher-forced perplexity of the ideal completions; -1 = not measured
  int64_t answer_tokens = 0;            // tokens it was measured over
  std::vector<DepthAccuracy> by_depth;  // empty for tasks without a needle depth
};

struct PerplexityResult {
  std::string policy;
  std::string file;
  int64_t documents = 0;
  int64_t tokens = 0;  // predicted tokens
  double perplexity = 0;
  double kv_ratio = 1;  // peak cache bytes against the full cache's on the same documents
};

struct EvalReport {
  std::string model;   // model directory
  std::string device;  // e.g. "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)"
  std::string dtype;   // "float32" | "bfloat16"
  uint64_t seed = 0;
  int64_t batch_size = 0;
  std::vector<std::string> policies;  // in the order given, "full" first
  std::vector<std::string> tasks;
  std::vector<int64_t> lengths;
  std::vector<CellResult> cells;  // one per policy × task × length
  std::vector<PerplexityResult> perplexity;
  double wall_seconds = 0;
};

// A markdown table padded so its columns also line up as plain text; `right[i]` right-aligns column i.
std::string markdown_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                           const std::vector<bool>& right);

std::string report_json(const EvalReport& report);
std::string report_markdown(const EvalReport& report);
// The markdown report as a terminal shows it: headings underlined, the tables' pipes turned into column gaps (the
// columns stay aligned), code marks and escapes removed. What `kvforge eval` prints; report.md keeps the markdown.
std::string plain_text(const std::string& markdown);
// Mean accuracy over tasks and lengths (x: mean KV ratio, y: mean accuracy), one line per policy family
// (policies sharing the text before ':'), points labelled, the Pareto front drawn.
std::string accuracy_vs_kv_svg(const EvalReport& report);
// The same with time to first token against the full model's on the x axis (KV Prediction's trade-off).
std::string accuracy_vs_ttft_svg(const EvalReport& report);
// Depth × length grid of accuracy for one policy on the retrieval tasks, cells coloured and annotated.
std::string needle_heatmap_svg(const EvalReport& report, const std::string& policy);

struct WrittenReport {
  std::vector<std::string> files;  // paths written, report.md first
};
// Writes report.json, report.md, accuracy_vs_kv.svg, accuracy_vs_ttft.svg and needle_heatmap-<policy>.svg (one per policy,
// only when some retrieval task has depths) into out_dir, each atomically (temp file, then rename).
WrittenReport write_report(const EvalReport& report, const std::string& out_dir);

}  // namespace kvforge::eval
