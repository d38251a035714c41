// Eval report formatting: JSON round trip, markdown content, SVG structure and escaping, heatmap pooling,
// Pareto front, and atomic file writing.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "eval/report.h"
#include "eval/svg_plot.h"

namespace kvforge::eval {
namespace {

size_t count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + needle.size())) ++n;
  return n;
}

CellResult cell(const std::string& policy, const std::string& task, int64_t length, double accuracy, double kv_ratio) {
  CellResult c;
  c.policy = policy;
  c.task = task;
  c.length = length;
  c.samples = 20;
  c.accuracy = accuracy;
  c.kv_ratio = kv_ratio;
  c.full_kv_bytes = 1000;
  c.kv_bytes = 1000 * kv_ratio;
  c.ttft_ms = 10;
  c.decode_tokens_per_s = 100;
  return c;
}

// Three policies, two tasks, two lengths; passkey carries depths. snapkv:budget=0.5 is dominated by
// snapkv:budget=0.25 (less accurate at more KV).
EvalReport sample_report() {
  EvalReport r;
  r.model = "models/tiny-base";
  r.device = "cpu";
  r.dtype = "float32";
  r.seed = 1234;
  r.batch_size = 8;
  r.wall_seconds = 42.25;
  r.policies = {"full", "snapkv:budget=0.25", "snapkv:budget=0.5"};
  r.tasks = {"passkey", "arithmetic"};
  r.lengths = {256, 512};
  for (const std::string& policy : r.policies) {
    const double kv = policy == "full" ? 1.0 : policy == "snapkv:budget=0.25" ? 0.25 : 0.5;
    const double acc = policy == "full" ? 1.0 : policy == "snapkv:budget=0.25" ? 0.875 : 0.75;
    for (const std::string& task : r.tasks) {
      for (int64_t length : r.lengths) {
        CellResult c = cell(policy, task, length, acc, kv);
        c.ttft_ms = length == 256 ? 10 : 30;
        if (task == "passkey") c.by_depth = {{0.0, 10, acc}, {0.5, 5, 1.0}, {1.0, 5, 0.6}};
        r.cells.push_back(c);
      }
    }
  }
  r.cells[0].peak_device_bytes = -1;
  r.perplexity = {{"full", "wiki.txt", 3, 4096, 12.3456, 1.0}};
  return r;
}

TEST(Report, JsonRoundTripKeepsEveryNumber) {
  const EvalReport report = sample_report();
  const std::string text = report_json(report);
  EXPECT_NE(text.find("\n  \"model\": \"models/tiny-base\""), std::string::npos) << "2-space pretty print";
  const nlohmann::json j = nlohmann::json::parse(text);
  EXPECT_EQ(j["seed"].get<uint64_t>(), 1234u);
  EXPECT_EQ(j["batch_size"].get<int64_t>(), 8);
  EXPECT_DOUBLE_EQ(j["wall_seconds"].get<double>(), 42.25);
  EXPECT_EQ(j["lengths"], nlohmann::json::array({256, 512}));
  ASSERT_EQ(j["cells"].size(), report.cells.size());
  const nlohmann::json& c = j["cells"][2];
  EXPECT_EQ(c["policy"], "full");
  EXPECT_EQ(c["task"], "arithmetic");
  EXPECT_EQ(c["length"].get<int64_t>(), 256);
  EXPECT_TRUE(c["accuracy"].is_number());
  EXPECT_DOUBLE_EQ(j["cells"][4]["accuracy"].get<double>(), 0.875);
  EXPECT_DOUBLE_EQ(j["cells"][4]["kv_ratio"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(j["cells"][4]["kv_bytes"].get<double>(), 250);
  EXPECT_DOUBLE_EQ(j["cells"][4]["ttft_ms"].get<double>(), 10);
  EXPECT_EQ(j["cells"][0]["peak_device_bytes"].get<int64_t>(), -1);
  ASSERT_EQ(j["cells"][0]["by_depth"].size(), 3u);
  EXPECT_DOUBLE_EQ(j["cells"][0]["by_depth"][2]["accuracy"].get<double>(), 0.6);
  EXPECT_EQ(j["cells"][0]["by_depth"][1]["samples"].get<int64_t>(), 5);
  EXPECT_TRUE(j["cells"][2]["by_depth"].is_array());
  EXPECT_TRUE(j["cells"][2]["by_depth"].empty());
  ASSERT_EQ(j["perplexity"].size(), 1u);
  EXPECT_DOUBLE_EQ(j["perplexity"][0]["perplexity"].get<double>(), 12.3456);
  EXPECT_EQ(j["perplexity"][0]["tokens"].get<int64_t>(), 4096);
}

TEST(Report, MarkdownNamesPoliciesTasksAndSampleCounts) {
  const std::string md = report_markdown(sample_report());
  for (const char* s : {"full", "snapkv:budget=0.25", "snapkv:budget=0.5", "passkey", "arithmetic"})
    EXPECT_NE(md.find(s), std::string::npos) << s;
  for (const char* s : {"models/tiny-base", "cpu", "float32", "1234", "batch size 8", "42.2 s"})
    EXPECT_NE(md.find(s), std::string::npos) << s;
  EXPECT_EQ(count(md, "n=20 per cell"), 2u) << "one caption per task table";
  EXPECT_NE(md.find("87.5% \xC2\xB7 KV 25.0%"), std::string::npos) << md;
  EXPECT_TRUE(std::regex_search(md, std::regex("\\|\\s+4096 \\|"))) << "perplexity tokens shown";
  EXPECT_NE(md.find("12.346"), std::string::npos);
  // Speed: TTFT 10 and 30 ms over the cells average to 20.
  EXPECT_NE(md.find("20.0"), std::string::npos);
  EXPECT_NE(md.find("\xE2\x80\x93"), std::string::npos) << "unknown peak memory shown as a dash";
}

TEST(Report, MarkdownPutsSampleCountInEachCellWhenTheyDiffer) {
  EvalReport report = sample_report();
  report.cells[1].samples = 7;  // full, passkey, 512
  const std::string md = report_markdown(report);
  EXPECT_NE(md.find("(n=7)"), std::string::npos);
  EXPECT_NE(md.find("(n=20)"), std::string::npos);
  EXPECT_EQ(count(md, "n=20 per cell"), 1u) << "arithmetic still uniform";
}

TEST(Report, PlainTextDropsTheMarkupAndKeepsTheColumnsAligned) {
  const std::string markdown = report_markdown(sample_report());
  const std::string text = plain_text(markdown);
  EXPECT_EQ(text.find('|'), std::string::npos) << text;
  EXPECT_EQ(text.find('#'), std::string::npos) << text;
  EXPECT_EQ(text.find('`'), std::string::npos) << text;
  EXPECT_NE(text.find("kvforge eval\n============\n"), std::string::npos) << text;
  // Each table row keeps its cells, one gap apart, and every row of a table is as wide as its header.
  // The first table: its header, the separator and the three policies' rows.
  std::istringstream lines(text.substr(text.find("\npolicy ") + 1));
  std::vector<std::string> table;
  for (std::string line; table.size() < 5 && std::getline(lines, line);) table.push_back(line);
  ASSERT_EQ(table.size(), 5u) << text;
  EXPECT_EQ(table[1].find_first_not_of("- "), std::string::npos) << table[1];
  EXPECT_EQ(table[3].rfind("snapkv:budget=0.25 ", 0), 0u) << table[3];
  auto columns = [](const std::string& line) {  // code points: "·" is one column, two bytes
    return std::count_if(line.begin(), line.end(),
                         [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
  };
  for (size_t i = 1; i < 5; ++i) EXPECT_EQ(columns(table[i]), columns(table[0])) << table[i];
  EXPECT_NE(table[2].find("100.0%"), std::string::npos) << table[2];  // the full cache's row, numbers intact
}

TEST(Report, MarkdownEscapesPipes) {
  EvalReport report = sample_report();
  for (CellResult& c : report.cells)
    if (c.policy == "full") c.policy = "a|b";
  report.policies[0] = "a|b";
  EXPECT_NE(report_markdown(report).find("a\\|b"), std::string::npos);
}

TEST(Report, ParetoFrontDropsDominatedPoints) {
  const std::vector<size_t> front = pareto_front({{1.0, 1.0}, {0.5, 0.7}, {0.25, 0.9}});
  EXPECT_EQ(front, (std::vector<size_t>{2, 0}));  // sorted by KV; (0.5, 0.7) loses to (0.25, 0.9)
  EXPECT_EQ(pareto_front({{0.5, 0.5}, {0.5, 0.5}}).size(), 2u) << "ties are not dominated";
  EXPECT_EQ(pareto_front({{0.5, 0.5}, {0.5, 0.6}}), (std::vector<size_t>{1}));
  EXPECT_TRUE(pareto_front({}).empty());
}

TEST(Report, PolicyFamilyAndPointLabel) {
  EXPECT_EQ(policy_family("snapkv:budget=0.25"), "snapkv");
  EXPECT_EQ(policy_family("full"), "full");
  EXPECT_EQ(policy_point_label("snapkv:budget=0.25"), "budget=0.25");
  EXPECT_EQ(policy_point_label("full"), "full");
  EXPECT_EQ(policy_point_label("streaming:window=64,sink=4"), "w=64,s=4");
  // A learned policy's description is in the legend; its point shows the method.
  EXPECT_EQ(policy_point_label("cskv (asvd+train, 50% KV)"), "cskv");
  EXPECT_EQ(policy_point_label("cskv (asvd+train, 50% KV):bits=4"), "bits=4");
}

TEST(Report, AccuracySvgHasPointsFrontLegendAndBalancedGroups) {
  const std::string svg = accuracy_vs_kv_svg(sample_report());
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_EQ(svg.substr(svg.find_last_not_of("\n") - 5, 6), "</svg>");
  EXPECT_EQ(count(svg, "<g"), count(svg, "</g>"));
  EXPECT_EQ(count(svg, "<text"), count(svg, "</text>"));
  EXPECT_EQ(count(svg, "<circle"), 3u) << "one point per policy";
  EXPECT_NE(svg.find("KV cache kept (fraction of full)"), std::string::npos);
  EXPECT_NE(svg.find(">accuracy<"), std::string::npos);
  EXPECT_NE(svg.find(">100%<"), std::string::npos);
  EXPECT_NE(svg.find(">Pareto front<"), std::string::npos);
  EXPECT_NE(svg.find(">budget=0.25<"), std::string::npos);
  // Front: snapkv 0.25 then full, one segment; the dominated snapkv 0.5 point is not on it.
  const size_t pareto = svg.find("class=\"pareto\"");
  ASSERT_NE(pareto, std::string::npos);
  const std::string path = svg.substr(pareto, svg.find("/>", pareto) - pareto);
  EXPECT_EQ(count(path, " L"), 1u) << path;
  EXPECT_EQ(count(svg, "class=\"family\""), 1u) << "snapkv joins two points; full is alone";
}

TEST(Report, AccuracyVsTtftPlotsEachCellAgainstTheFullModelsTime) {
  EvalReport report = sample_report();
  // snapkv:budget=0.25 takes half the full time at 256 tokens and a quarter at 512: a mean ratio of 0.375.
  for (CellResult& c : report.cells)
    if (c.policy == "snapkv:budget=0.25") c.ttft_ms = c.length == 256 ? 5 : 7.5;
  const std::string svg = accuracy_vs_ttft_svg(report);
  EXPECT_EQ(count(svg, "<circle"), 3u);
  EXPECT_NE(svg.find("time to first token (fraction of the full model&apos;s)"), std::string::npos);
  EXPECT_NE(svg.find("snapkv:budget=0.25: accuracy 87.5%, TTFT 37.5%"), std::string::npos) << svg;
  EXPECT_NE(svg.find("snapkv:budget=0.5: accuracy 75.0%, TTFT 100.0%"), std::string::npos);
}

TEST(Report, AccuracySvgEscapesLabels) {
  EvalReport report = sample_report();
  const std::string weird = "we<ird&co:b=\"1\"";
  for (CellResult& c : report.cells)
    if (c.policy == "snapkv:budget=0.5") c.policy = weird;
  report.policies[2] = weird;
  const std::string svg = accuracy_vs_kv_svg(report);
  EXPECT_NE(svg.find("we&lt;ird&amp;co"), std::string::npos);
  EXPECT_NE(svg.find("b=&quot;1&quot;"), std::string::npos);
  EXPECT_EQ(svg.find("we<ird"), std::string::npos);
  EXPECT_EQ(svg.find("ird&co"), std::string::npos);
  EXPECT_EQ(count(svg, "<circle"), 3u);
}

TEST(Report, HeatmapPoolsTasksPerLengthAndDepth) {
  EvalReport report = sample_report();
  // A second retrieval task at (256, depth 0.5): 1 of 1 right here, 0 of 3 right in passkey -> 25%.
  CellResult extra = cell("full", "needle", 256, 0.5, 1.0);
  extra.by_depth = {{0.5, 1, 1.0}};
  report.tasks.push_back("needle");
  report.cells.push_back(extra);
  for (CellResult& c : report.cells)
    if (c.policy == "full" && c.task == "passkey" && c.length == 256) c.by_depth = {{0.0, 4, 1.0}, {0.5, 3, 0.0}};
  const std::string svg = needle_heatmap_svg(report, "full");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_EQ(count(svg, "<g"), count(svg, "</g>"));
  EXPECT_EQ(count(svg, "class=\"cell\""), 2u * 3u) << "2 lengths x 3 depths";
  EXPECT_NE(svg.find(">25%<"), std::string::npos) << "pooled (1*1 + 3*0) / 4";
  EXPECT_NE(svg.find(">100%<"), std::string::npos);
  EXPECT_NE(svg.find(">60%<"), std::string::npos) << "length 512, depth 1.0";
  EXPECT_EQ(count(svg, "fill=\"#d0d0d0\""), 1u + 1u) << "(256, depth 1.0) has no data; plus the legend swatch";
  EXPECT_NE(svg.find("full"), std::string::npos);
  EXPECT_NE(svg.find("n per cell: 4\xE2\x80\x93"
                     "10"),
            std::string::npos);
  // Depth rows run top to bottom from 0%.
  EXPECT_LT(svg.find(">0%<"), svg.find(">50%<"));
  EXPECT_NE(svg.find(">256<"), std::string::npos);
}

std::string make_temp_dir() {
  char pattern[] = "/tmp/kvforge_report_test.XXXXXX";
  const char* dir = ::mkdtemp(pattern);
  if (dir == nullptr) throw std::runtime_error("mkdtemp failed");
  return dir;
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(Report, WriteReportWritesFilesAtomically) {
  const std::string base = make_temp_dir();
  const std::string dir = base + "/nested/out";
  EvalReport report = sample_report();
  report.policies.push_back("odd <name>");  // no cells at all: no heatmap
  const WrittenReport written = write_report(report, dir);
  const std::vector<std::string> expected = {dir + "/report.md",
                                             dir + "/report.json",
                                             dir + "/accuracy_vs_kv.svg",
                                             dir + "/accuracy_vs_ttft.svg",
                                             dir + "/needle_heatmap-full.svg",
                                             dir + "/needle_heatmap-snapkv_budget_0.25.svg",
                                             dir + "/needle_heatmap-snapkv_budget_0.5.svg"};
  EXPECT_EQ(written.files, expected);
  for (const std::string& path : written.files) EXPECT_TRUE(std::filesystem::is_regular_file(path)) << path;
  EXPECT_EQ(read(dir + "/report.md"), report_markdown(report));
  EXPECT_EQ(nlohmann::json::parse(read(dir + "/report.json"))["cells"].size(), report.cells.size());
  size_t entries = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    ++entries;
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << entry.path();
  }
  EXPECT_EQ(entries, expected.size());
  // Overwriting an existing report works too (rename over the old file).
  EXPECT_EQ(write_report(report, dir).files.size(), expected.size());
  // One by one: std::filesystem::remove_all crashes in libtorch-linked binaries.
  for (const std::string& path : written.files) std::filesystem::remove(path);
  for (const std::string& path : {dir, base + "/nested", base}) std::filesystem::remove(path);
}

// Artifact policies carry their description in the label: the heatmap's file name is a short slug of it, and the
// plot's legend shows all of it, wrapped, where a fixed cut used to end it mid-word.
TEST(Report, LearnedPolicyLabelsGiveSlugFileNamesAndAWholeLegend) {
  const std::string lizard = "lizard (Lizard, window 32, 60 steps + 60 LoRA r8)";
  const std::string cskv = "cskv (asvd+train, 50% KV)";
  EvalReport report = sample_report();
  for (const std::string& policy : {lizard, cskv}) {
    report.policies.push_back(policy);
    for (CellResult c : report.cells)
      if (c.policy == "full") {
        c.policy = policy;
        report.cells.push_back(c);
      }
  }
  const std::string dir = make_temp_dir() + "/out";
  const WrittenReport written = write_report(report, dir);
  EXPECT_NE(std::find(written.files.begin(), written.files.end(),
                      dir + "/needle_heatmap-lizard_window_32_60_steps_60_lora_r8.svg"),
            written.files.end());
  EXPECT_NE(std::find(written.files.begin(), written.files.end(), dir + "/needle_heatmap-cskv_asvd_train_50_kv.svg"),
            written.files.end());
  const std::string svg = accuracy_vs_kv_svg(report);
  const std::string legend = svg.substr(svg.find("<g class=\"legend\""));
  for (const char* line :
       {">lizard<", ">Lizard, window 32,<", ">60 steps + 60 LoRA<", ">r8<", ">cskv<", ">asvd+train, 50% KV<"})
    EXPECT_NE(legend.find(line), std::string::npos) << line << " in " << legend;
  EXPECT_EQ(legend.find("\xE2\x80\xA6"), std::string::npos) << "no legend line is cut: " << legend;
}

TEST(Report, WriteReportNamesThePathOnFailure) {
  const std::string dir = make_temp_dir();
  const std::string blocker = dir + "/not_a_dir";
  std::ofstream(blocker) << "x";
  try {
    write_report(sample_report(), blocker + "/out");
    FAIL() << "expected std::runtime_error";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find(blocker), std::string::npos) << error.what();
  }
  std::filesystem::remove(blocker);
  std::filesystem::remove(dir);
}

}  // namespace
}  // namespace kvforge::eval
