// report.json, report.md and the files on disk; the SVG plots live in svg_plot.cpp.
#include "eval/report.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "runtime/file_system.h"

namespace kvforge::eval {
namespace {

using Json = nlohmann::ordered_json;  // keys in struct order, so the file reads like the header

constexpr const char* kDash = "\xE2\x80\x93";  // "–": a value that was not measured
constexpr const char* kDot = " \xC2\xB7 ";     // " · "

std::string fixed(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
  return buffer;
}

std::string percent(double fraction) { return fixed(100.0 * fraction, 1) + "%"; }

// A '|' inside a policy label or file name would end the markdown cell early.
std::string md_cell(const std::string& text) {
  std::string out;
  for (char c : text) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

// Code points, not bytes: "·" and "–" are one column wide but several UTF-8 bytes.
size_t display_width(const std::string& text) {
  size_t width = 0;
  for (unsigned char c : text) width += (c & 0xC0) != 0x80;
  return width;
}

const CellResult* find_cell(const EvalReport& report, const std::string& policy, const std::string& task,
                            int64_t length) {
  for (const CellResult& cell : report.cells)
    if (cell.policy == policy && cell.task == task && cell.length == length) return &cell;
  return nullptr;
}

std::string task_table(const EvalReport& report, const std::string& task) {
  std::set<int64_t> counts;
  for (const CellResult& cell : report.cells)
    if (cell.task == task) counts.insert(cell.samples);
  // One sample count for the whole table goes in the caption; otherwise each cell carries its own.
  const bool uniform = counts.size() == 1;
  std::string caption = "### " + md_cell(task) + kDot + "accuracy" + kDot + "KV kept";
  if (uniform) caption += kDot + std::string("n=") + std::to_string(*counts.begin()) + " per cell";
  std::vector<std::string> header{"policy"};
  for (int64_t length : report.lengths) header.push_back(std::to_string(length) + " tokens");
  std::vector<std::vector<std::string>> rows;
  for (const std::string& policy : report.policies) {
    std::vector<std::string> row{md_cell(policy)};
    for (int64_t length : report.lengths) {
      const CellResult* cell = find_cell(report, policy, task, length);
      if (cell == nullptr) {
        row.push_back(kDash);
        continue;
      }
      std::string value = percent(cell->accuracy) + kDot + "KV " + percent(cell->kv_ratio);
      if (!uniform) value += " (n=" + std::to_string(cell->samples) + ")";
      row.push_back(value);
    }
    rows.push_back(row);
  }
  std::vector<bool> right(header.size(), true);
  right[0] = false;
  return caption + "\n\n" + markdown_table(header, rows, right);
}

// Teacher-forced perplexity of the ideal completions, one column per task and length; empty when not measured.
std::string answer_perplexity_table(const EvalReport& report) {
  std::vector<std::pair<std::string, int64_t>> columns;
  for (const std::string& task : report.tasks)
    for (int64_t length : report.lengths) columns.emplace_back(task, length);
  std::vector<std::string> header{"policy"};
  for (const auto& [task, length] : columns) header.push_back(md_cell(task) + " @" + std::to_string(length));
  std::vector<std::vector<std::string>> rows;
  bool measured = false;
  for (const std::string& policy : report.policies) {
    std::vector<std::string> row{md_cell(policy)};
    for (const auto& [task, length] : columns) {
      const CellResult* cell = find_cell(report, policy, task, length);
      const bool has = cell != nullptr && cell->answer_perplexity >= 0;
      measured = measured || has;
      row.push_back(has ? fixed(cell->answer_perplexity, 3) : kDash);
    }
    rows.push_back(row);
  }
  if (!measured) return "";
  std::vector<bool> right(header.size(), true);
  right[0] = false;
  return "### answer perplexity" + std::string(kDot) +
         "teacher-forced on the ideal completions after the policy compressed the prompt (lower is better)\n\n" +
         markdown_table(header, rows, right);
}

std::string speed_table(const EvalReport& report) {
  std::vector<std::vector<std::string>> rows;
  std::set<int64_t> counts;
  size_t cells_per_policy = 0;
  for (const std::string& policy : report.policies) {
    double kv = 0, ttft = 0, decode = 0;
    int64_t peak = -1;
    size_t cells = 0;
    for (const CellResult& cell : report.cells) {
      if (cell.policy != policy) continue;
      kv += cell.kv_ratio, ttft += cell.ttft_ms, decode += cell.decode_tokens_per_s, ++cells;
      peak = std::max(peak, cell.peak_device_bytes);
      counts.insert(cell.samples);
    }
    if (cells == 0) continue;
    cells_per_policy = std::max(cells_per_policy, cells);
    rows.push_back({md_cell(policy), percent(kv / cells), fixed(ttft / cells, 1), fixed(decode / cells, 1),
                    peak < 0 ? kDash : fixed(static_cast<double>(peak) / (1024.0 * 1024.0), 1)});
  }
  if (rows.empty()) return "";
  const bool any_peak_missing =
      std::any_of(rows.begin(), rows.end(), [](const std::vector<std::string>& row) { return row.back() == kDash; });
  std::string n = counts.size() == 1 ? std::to_string(*counts.begin())
                                     : std::to_string(*counts.begin()) + kDash + std::to_string(*counts.rbegin());
  // Peak memory is the largest over a policy's cells: a mean of peaks at different lengths means nothing.
  const std::string caption = "### speed and memory" + std::string(kDot) + "mean over " +
                              std::to_string(cells_per_policy) + " cells (n=" + n +
                              " prompts each); peak = max over cells";
  std::string table = caption + "\n\n" +
                      markdown_table({"policy", "KV kept", "TTFT ms", "decode tok/s", "peak MiB"}, rows,
                                     {false, true, true, true, true});
  if (any_peak_missing)
    table += "\npeak MiB is the device's peak allocated memory, read on CUDA only: " + std::string(kDash) +
             " where the run was on the CPU\n";
  return table;
}

std::string perplexity_table(const EvalReport& report) {
  std::vector<std::vector<std::string>> rows;
  for (const PerplexityResult& p : report.perplexity)
    rows.push_back({md_cell(p.policy), md_cell(p.file), std::to_string(p.documents), std::to_string(p.tokens),
                    fixed(p.perplexity, 3), percent(p.kv_ratio)});
  return "### perplexity\n\n" + markdown_table({"policy", "file", "docs", "tokens", "perplexity", "KV kept"}, rows,
                                               {false, false, true, true, true, true});
}

// A short file-name slug of a policy label: lower case, each run of other characters one '_', a word that repeats
// the one before it dropped ("lizard (Lizard, window 32)" -> "lizard_window_32"), cut at a word to 40 characters.
std::string policy_slug(const std::string& label) {
  constexpr size_t kMaxChars = 40;
  std::vector<std::string> words(1);
  for (const char c : label) {
    const auto byte = static_cast<unsigned char>(c);
    if (std::isalnum(byte) || c == '.' || c == '-') {
      words.back() += static_cast<char>(std::tolower(byte));
    } else if (!words.back().empty()) {
      words.emplace_back();
    }
  }
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) {
    if (words[i].empty() || (i > 0 && words[i] == words[i - 1])) continue;
    const size_t grown = out.size() + (out.empty() ? 0 : 1) + words[i].size();
    if (grown > kMaxChars && !out.empty()) break;
    out += (out.empty() ? "" : "_") + words[i].substr(0, kMaxChars);
  }
  return out.empty() ? "_" : out;
}

}  // namespace

std::string markdown_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                           const std::vector<bool>& right) {
  std::vector<size_t> widths(header.size(), 3);
  for (size_t i = 0; i < header.size(); ++i) widths[i] = std::max(widths[i], display_width(header[i]));
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], display_width(row[i]));
  auto render = [&](const std::vector<std::string>& row) {
    std::string out = "|";
    for (size_t i = 0; i < row.size(); ++i) {
      const std::string pad(widths[i] - display_width(row[i]), ' ');
      out += " " + (right[i] ? pad + row[i] : row[i] + pad) + " |";
    }
    return out + "\n";
  };
  std::string out = render(header) + "|";
  for (size_t i = 0; i < header.size(); ++i) out += std::string(widths[i] + 1, '-') + (right[i] ? ":|" : "-|");
  out += "\n";
  for (const auto& row : rows) out += render(row);
  return out;
}

std::string report_json(const EvalReport& report) {
  Json cells = Json::array();
  for (const CellResult& cell : report.cells) {
    Json by_depth = Json::array();
    for (const DepthAccuracy& d : cell.by_depth)
      by_depth.push_back({{"depth", d.depth}, {"samples", d.samples}, {"accuracy", d.accuracy}});
    cells.push_back({{"policy", cell.policy},
                     {"task", cell.task},
                     {"length", cell.length},
                     {"samples", cell.samples},
                     {"accuracy", cell.accuracy},
                     {"kv_bytes", cell.kv_bytes},
                     {"full_kv_bytes", cell.full_kv_bytes},
                     {"kv_ratio", cell.kv_ratio},
                     {"ttft_ms", cell.ttft_ms},
                     {"decode_tokens_per_s", cell.decode_tokens_per_s},
                     {"peak_device_bytes", cell.peak_device_bytes},
                     {"answer_perplexity", cell.answer_perplexity},
                     {"answer_tokens", cell.answer_tokens},
                     {"by_depth", by_depth}});
  }
  Json perplexity = Json::array();
  for (const PerplexityResult& p : report.perplexity)
    perplexity.push_back({{"policy", p.policy},
                          {"file", p.file},
                          {"documents", p.documents},
                          {"tokens", p.tokens},
                          {"perplexity", p.perplexity},
                          {"kv_ratio", p.kv_ratio}});
  Json root = {{"model", report.model},
               {"device", report.device},
               {"dtype", report.dtype},
               {"seed", report.seed},
               {"batch_size", report.batch_size},
               {"policies", report.policies},
               {"tasks", report.tasks},
               {"lengths", report.lengths},
               {"cells", cells},
               {"perplexity", perplexity},
               {"wall_seconds", report.wall_seconds}};
  return root.dump(2) + "\n";
}

std::string report_markdown(const EvalReport& report) {
  std::string out = "# kvforge eval\n\n";
  out += "model `" + report.model + "`" + kDot + "device " + report.device + kDot + "dtype " + report.dtype + kDot +
         "seed " + std::to_string(report.seed) + kDot + "batch size " + std::to_string(report.batch_size) + kDot +
         "wall time " + fixed(report.wall_seconds, 1) + " s\n";
  for (const std::string& task : report.tasks) out += "\n" + task_table(report, task);
  const std::string answers = answer_perplexity_table(report);
  if (!answers.empty()) out += "\n" + answers;
  const std::string speed = speed_table(report);
  if (!speed.empty()) out += "\n" + speed;
  if (!report.perplexity.empty()) out += "\n" + perplexity_table(report);
  return out;
}

std::string plain_text(const std::string& markdown) {
  std::istringstream lines(markdown);
  std::string out;
  for (std::string line; std::getline(lines, line);) {
    const size_t hashes = line.find_first_not_of('#');
    if (hashes != std::string::npos && hashes > 0 && line[hashes] == ' ') {  // "### title" -> title, underlined
      const std::string title = line.substr(hashes + 1);
      out += title + "\n" + std::string(display_width(title), hashes == 1 ? '=' : '-') + "\n";
      continue;
    }
    if (line.rfind("|", 0) != 0) {
      line.erase(std::remove(line.begin(), line.end(), '`'), line.end());
      out += line + "\n";
      continue;
    }
    // A table row "| a | b |" -> "a  b"; the separator row "|---|--:|" -> dashes under each column. Each cell is
    // padded by one character on each side (a space, or a dash in the separator): those go, the widths stay.
    const bool separator = line.find_first_not_of("|-: ") == std::string::npos;
    std::vector<std::string> cells(1);
    for (size_t i = 1; i < line.size(); ++i) {
      if (line[i] == '\\' && i + 1 < line.size() && line[i + 1] == '|') {  // an escaped pipe inside a cell
        cells.back() += '|';
        ++i;
      } else if (line[i] == '|') {
        cells.emplace_back();
      } else {
        cells.back() += separator && line[i] == ':' ? '-' : line[i];
      }
    }
    cells.pop_back();  // what follows the closing pipe
    std::string row;
    for (const std::string& cell : cells)
      row += (row.empty() ? "" : "  ") + (cell.size() >= 2 ? cell.substr(1, cell.size() - 2) : cell);
    while (!row.empty() && row.back() == ' ') row.pop_back();
    out += row + "\n";
  }
  return out;
}

WrittenReport write_report(const EvalReport& report, const std::string& out_dir) {
  const std::filesystem::path dir(out_dir);
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) throw std::runtime_error("cannot create directory " + out_dir + ": " + error.message());

  WrittenReport written;
  auto emit = [&](const std::string& name, const std::string& content) {
    const std::filesystem::path path = dir / name;
    write_text_atomically(path.string(), content);
    written.files.push_back(path.string());
  };
  emit("report.md", report_markdown(report));
  emit("report.json", report_json(report));
  emit("accuracy_vs_kv.svg", accuracy_vs_kv_svg(report));
  emit("accuracy_vs_ttft.svg", accuracy_vs_ttft_svg(report));
  std::set<std::string> used;
  for (const std::string& policy : report.policies) {
    const bool has_depths = std::any_of(report.cells.begin(), report.cells.end(), [&](const CellResult& cell) {
      return cell.policy == policy && !cell.by_depth.empty();
    });
    if (!has_depths) continue;
    // Different labels can slug alike ("a:b", "a_b"); a suffix keeps one from overwriting the other.
    std::string stem = "needle_heatmap-" + policy_slug(policy);
    for (int suffix = 2; used.count(stem); ++suffix)
      stem = "needle_heatmap-" + policy_slug(policy) + "-" + std::to_string(suffix);
    used.insert(stem);
    emit(stem + ".svg", needle_heatmap_svg(report, policy));
  }
  return written;
}

}  // namespace kvforge::eval
