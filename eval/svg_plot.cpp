// The two report plots, written as plain SVG text: no plotting library, so the eval binary stays
// dependency-free and the files open in any browser.
#include "eval/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "eval/report.h"

namespace kvforge::eval {
namespace {

constexpr double kWidth = 640;
constexpr double kHeight = 420;
// Scatter plot area; the legend sits to its right, outside the data, so it can never hide a point.
constexpr double kPlotLeft = 64;
constexpr double kPlotRight = 474;
constexpr double kPlotTop = 52;
constexpr double kPlotBottom = 360;
constexpr double kLabelFontPx = 11;
// Average advance of DejaVu/Helvetica digits and lowercase at 11 px, a little generous so estimated
// label boxes contain the drawn text.
constexpr double kCharPx = 6.6;
constexpr const char* kFullColor = "#333333";
// Tableau 10: distinct hues that stay apart for common colour-vision deficiencies.
constexpr const char* kPalette[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1",
                                    "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac"};
constexpr const char* kMissingColor = "#d0d0d0";

std::string num(double value, int decimals = 1) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
  return buffer;
}

std::string percent(double fraction) { return num(100.0 * fraction, 0) + "%"; }

// Depth rows such as 12.5% must not print as 13% next to a real 13% row.
std::string depth_percent(double depth) {
  const double value = 100.0 * depth;
  return num(value, std::fabs(value - std::round(value)) < 0.05 ? 0 : 1) + "%";
}

// `title` becomes the document's <title>: what a browser tab or screen reader shows.
std::string svg_open(double width, double height, const std::string& title) {
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(width, 0) + "\" height=\"" + num(height, 0) +
         "\" viewBox=\"0 0 " + num(width, 0) + " " + num(height, 0) +
         "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
         "<title>" +
         xml_escape(title) + "</title>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
}

// `content` is raw text; it is escaped here so no caller can forget.
std::string text(double x, double y, const std::string& content, const std::string& attributes = "") {
  return "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\"" + (attributes.empty() ? "" : " " + attributes) + ">" +
         xml_escape(content) + "</text>\n";
}

std::string line(double x1, double y1, double x2, double y2, const std::string& attributes) {
  return "<line x1=\"" + num(x1) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x2) + "\" y2=\"" + num(y2) + "\" " +
         attributes + "/>\n";
}

std::string shorten(const std::string& label, size_t max_chars) {
  return label.size() <= max_chars ? label : label.substr(0, max_chars - 1) + "\xE2\x80\xA6";  // "…"
}

// A legend entry's lines: "name (a, b, c)" -> {"name", "a, b, c" wrapped at spaces to 19 characters}; the name, or a
// label without a description, shortened to 18 (the legend column's width at 12 px).
std::vector<std::string> legend_lines(const std::string& family) {
  constexpr size_t kNameChars = 18, kDescriptionChars = 19;
  const size_t open = family.find(" (");
  if (open == std::string::npos || family.back() != ')') return {shorten(family, kNameChars)};
  std::vector<std::string> lines{shorten(family.substr(0, open), kNameChars)};
  std::istringstream words(family.substr(open + 2, family.size() - open - 3));
  std::string line;
  for (std::string word; words >> word;) {
    if (!line.empty() && line.size() + 1 + word.size() > kDescriptionChars) {
      lines.push_back(shorten(line, kDescriptionChars));
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
  }
  if (!line.empty()) lines.push_back(shorten(line, kDescriptionChars));
  return lines;
}

struct Box {
  double x0, y0, x1, y1;
};

double overlap(const Box& a, const Box& b) {
  const double w = std::min(a.x1, b.x1) - std::max(a.x0, b.x0);
  const double h = std::min(a.y1, b.y1) - std::max(a.y0, b.y0);
  return w > 0 && h > 0 ? w * h : 0.0;
}

// Greedy label placement: try positions around the point, keep the first that hits nothing placed
// so far (other labels, every point, the drawn lines as dots along them) and stays in the plot area;
// else the least-overlapping one.
Box place_label(double px, double py, double radius, double width, const std::vector<Box>& taken,
                const std::vector<std::pair<double, double>>& line_dots) {
  const double h = kLabelFontPx + 2, g = radius + 2.5, dx = 0.6 * g, dy = 0.7 * g;
  const Box candidates[] = {
      {px + g, py - h / 2, px + g + width, py + h / 2},              // right
      {px - g - width, py - h / 2, px - g, py + h / 2},              // left
      {px + dx, py - dy - h, px + dx + width, py - dy},              // upper right
      {px + dx, py + dy, px + dx + width, py + dy + h},              // lower right
      {px - dx - width, py - dy - h, px - dx, py - dy},              // upper left
      {px - dx - width, py + dy, px - dx, py + dy + h},              // lower left
      {px - width / 2, py - g - 1 - h, px + width / 2, py - g - 1},  // above
      {px - width / 2, py + g + 1, px + width / 2, py + g + 1 + h},  // below
      {px + g, py - g - 6 - h, px + g + width, py - g - 6},          // further up
      {px + g, py + g + 6, px + g + width, py + g + 6 + h},          // further down
  };
  const Box area{kPlotLeft + 2, kPlotTop - 14, kPlotRight + 4, kPlotBottom - 2};
  double best_cost = 1e300;
  Box best = candidates[0];
  for (const Box& box : candidates) {
    double cost = 0;
    for (const Box& other : taken) cost += overlap(box, other);
    for (const auto& [x, y] : line_dots)
      cost += (x > box.x0 - 1 && x < box.x1 + 1 && y > box.y0 - 1 && y < box.y1 + 1) ? 8 : 0;
    const double inside = overlap(box, area);
    cost += 4 * ((box.x1 - box.x0) * (box.y1 - box.y0) - inside);  // leaving the plot is worse than crowding
    if (cost < best_cost) best_cost = cost, best = box;
    if (cost == 0) break;
  }
  return best;
}

struct PolicyPoint {
  std::string policy;
  std::string family;
  double kv = 0;
  double accuracy = 0;
};

// "20" or "2–5": the spread of sample counts over the cells a plot averages.
std::string sample_span(int64_t low, int64_t high) {
  return low == high ? std::to_string(low) : std::to_string(low) + "\xE2\x80\x93" + std::to_string(high);
}

// Red (0) through yellow (0.5) to green (1): ColorBrewer RdYlGn end and middle points.
std::string accuracy_color(double accuracy, bool* dark) {
  static const double stops[3][3] = {{215, 48, 39}, {254, 224, 139}, {26, 152, 80}};
  const double t = std::clamp(accuracy, 0.0, 1.0) * 2;
  const int segment = t < 1 ? 0 : 1;
  const double f = t - segment;
  double rgb[3];
  for (int i = 0; i < 3; ++i) rgb[i] = stops[segment][i] + f * (stops[segment + 1][i] - stops[segment][i]);
  // White text on the darker ends, black on the yellow middle, judged by luma.
  *dark = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) < 150;
  char buffer[16];
  std::snprintf(buffer, sizeof buffer, "#%02x%02x%02x", static_cast<int>(std::lround(rgb[0])),
                static_cast<int>(std::lround(rgb[1])), static_cast<int>(std::lround(rgb[2])));
  return buffer;
}

}  // namespace

std::string xml_escape(const std::string& text) {
  static constexpr std::string_view kSpecial = "&<>\"'";
  static constexpr const char* kEntities[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const size_t special = kSpecial.find(c);
    if (special == std::string_view::npos)
      out += c;
    else
      out += kEntities[special];
  }
  return out;
}

std::vector<size_t> pareto_front(const std::vector<std::pair<double, double>>& points) {
  std::vector<size_t> front;
  for (size_t i = 0; i < points.size(); ++i) {
    bool dominated = false;
    for (size_t j = 0; j < points.size() && !dominated; ++j) {
      const auto& [x, y] = points[i];
      const auto& [ox, oy] = points[j];
      dominated = ox <= x && oy >= y && (ox < x || oy > y);
    }
    if (!dominated) front.push_back(i);
  }
  std::sort(front.begin(), front.end(), [&](size_t a, size_t b) { return points[a] < points[b]; });
  return front;
}

std::string policy_family(const std::string& policy) { return policy.substr(0, policy.find(':')); }

std::string policy_point_label(const std::string& policy) {
  const size_t colon = policy.find(':');
  if (colon == std::string::npos) {
    // "cskv (asvd+train, 50% KV)": the legend carries the description, so the point shows the method's name.
    const size_t open = policy.find(" (");
    return shorten(open == std::string::npos ? policy : policy.substr(0, open), 16);
  }
  const std::string rest = policy.substr(colon + 1);
  if (rest.size() <= 12) return rest;
  // Long parameter lists: keep every value, cut each key to its first letter.
  std::string out;
  size_t start = 0;
  while (start <= rest.size()) {
    const size_t comma = std::min(rest.find(',', start), rest.size());
    const std::string part = rest.substr(start, comma - start);
    const size_t eq = part.find('=');
    if (!out.empty()) out += ',';
    out += eq == std::string::npos || eq == 0 ? part : part.substr(0, 1) + part.substr(eq);
    start = comma + 1;
  }
  return shorten(out, 16);
}

namespace {

// The x axis of an accuracy plot: a per-cell value relative to the full cache's (1 = the baseline).
struct RelativeAxis {
  std::string title;    // "Accuracy vs <title>"
  std::string label;    // under the axis
  std::string tooltip;  // before the value in a point's tooltip
  std::function<double(const EvalReport&, const CellResult&)> value;
};

// Mean accuracy over tasks and lengths against the mean of axis.value, one line per policy family, points labelled,
// the Pareto front drawn.
std::string accuracy_plot_svg(const EvalReport& report, const RelativeAxis& axis) {
  std::vector<PolicyPoint> points;
  std::vector<std::string> families;
  int64_t low_n = std::numeric_limits<int64_t>::max(), high_n = 0;
  for (const std::string& policy : report.policies) {
    double kv = 0, accuracy = 0;
    int cells = 0;
    for (const CellResult& cell : report.cells) {
      if (cell.policy != policy) continue;
      kv += axis.value(report, cell), accuracy += cell.accuracy, ++cells;
      low_n = std::min(low_n, cell.samples), high_n = std::max(high_n, cell.samples);
    }
    if (cells == 0) continue;
    points.push_back({policy, policy_family(policy), kv / cells, accuracy / cells});
    if (std::find(families.begin(), families.end(), points.back().family) == families.end())
      families.push_back(points.back().family);
  }
  std::map<std::string, std::string> colors;
  size_t next_color = 0;
  for (const std::string& family : families)
    colors[family] = family == "full" ? kFullColor : kPalette[next_color++ % std::size(kPalette)];

  // x normally spans [0, 1]; a policy whose bookkeeping overshoots the full cache widens it.
  double x_max = 1.0;
  for (const PolicyPoint& p : points) x_max = std::max(x_max, std::ceil(p.kv * 5 - 1e-9) / 5);
  auto sx = [&](double x) { return kPlotLeft + (kPlotRight - kPlotLeft) * x / x_max; };
  auto sy = [](double y) { return kPlotBottom - (kPlotBottom - kPlotTop) * y; };

  std::string subtitle = "mean over tasks \xC3\x97 lengths";
  if (!points.empty()) subtitle += " (n=" + sample_span(low_n, high_n) + " per cell)";
  if (!report.model.empty()) subtitle += " \xC2\xB7 " + shorten(report.model, 48);
  std::string svg = svg_open(kWidth, kHeight, "Accuracy vs " + axis.title + ": " + subtitle);
  svg += text(kWidth / 2, 22, "Accuracy vs " + axis.title,
              "text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\"");
  svg += text(kWidth / 2, 39, subtitle, "text-anchor=\"middle\" font-size=\"11\" fill=\"#555\"");

  svg += "<g class=\"axes\" font-size=\"11\" fill=\"#333\">\n";
  for (int i = 0; i <= static_cast<int>(std::lround(x_max * 5)); ++i) {
    const double x = sx(i * 0.2);
    svg += line(x, kPlotTop, x, kPlotBottom, "stroke=\"#e5e5e5\"");
    svg += line(x, kPlotBottom, x, kPlotBottom + 4, "stroke=\"#333\"");
    svg += text(x, kPlotBottom + 17, num(i * 0.2), "text-anchor=\"middle\"");
  }
  for (int i = 0; i <= 5; ++i) {
    const double y = sy(i * 0.2);
    svg += line(kPlotLeft, y, kPlotRight, y, "stroke=\"#e5e5e5\"");
    svg += line(kPlotLeft - 4, y, kPlotLeft, y, "stroke=\"#333\"");
    svg += text(kPlotLeft - 7, y + 4, std::to_string(i * 20) + "%", "text-anchor=\"end\"");
  }
  svg += line(kPlotLeft, kPlotBottom, kPlotRight, kPlotBottom, "stroke=\"#333\"");
  svg += line(kPlotLeft, kPlotTop, kPlotLeft, kPlotBottom, "stroke=\"#333\"");
  svg += text((kPlotLeft + kPlotRight) / 2, kPlotBottom + 38, axis.label, "text-anchor=\"middle\" font-size=\"12\"");
  svg += text(
      18, (kPlotTop + kPlotBottom) / 2, "accuracy",
      "text-anchor=\"middle\" font-size=\"12\" transform=\"rotate(-90 18 " + num((kPlotTop + kPlotBottom) / 2) + ")\"");
  svg += "</g>\n";

  if (points.empty()) {
    svg += text((kPlotLeft + kPlotRight) / 2, (kPlotTop + kPlotBottom) / 2, "no task results",
                "text-anchor=\"middle\" font-size=\"13\" fill=\"#777\"");
    return svg + "</svg>\n";
  }

  std::vector<std::pair<double, double>> xy;
  for (const PolicyPoint& p : points) xy.emplace_back(p.kv, p.accuracy);
  std::vector<std::pair<double, double>> line_dots;  // points along every drawn line, for label placement
  auto trace = [&](const std::vector<std::pair<double, double>>& polyline) {
    std::string d;
    for (size_t i = 0; i < polyline.size(); ++i) {
      const double x = sx(polyline[i].first), y = sy(polyline[i].second);
      d += (d.empty() ? "M" : " L") + num(x) + " " + num(y);
      if (i == 0) continue;
      const double x0 = sx(polyline[i - 1].first), y0 = sy(polyline[i - 1].second);
      const int steps = static_cast<int>(std::hypot(x - x0, y - y0) / 3) + 1;
      for (int k = 0; k <= steps; ++k) line_dots.emplace_back(x0 + (x - x0) * k / steps, y0 + (y - y0) * k / steps);
    }
    return d;
  };

  for (const std::string& family : families) {
    std::vector<std::pair<double, double>> members;
    for (const PolicyPoint& p : points)
      if (p.family == family) members.emplace_back(p.kv, p.accuracy);
    if (members.size() < 2) continue;
    std::sort(members.begin(), members.end());
    svg += "<path class=\"family\" d=\"" + trace(members) + "\" fill=\"none\" stroke=\"" + colors[family] +
           "\" stroke-width=\"2\" stroke-opacity=\"0.8\"/>\n";
  }
  // The front goes over the family lines (a family is often the front itself) but under the points.
  std::vector<std::pair<double, double>> front_points;
  for (size_t index : pareto_front(xy)) front_points.push_back(xy[index]);
  svg += "<path class=\"pareto\" d=\"" + trace(front_points) +
         "\" fill=\"none\" stroke=\"#555\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>\n";

  // Every point is an obstacle before any label is placed, so no label covers a later point.
  std::vector<Box> taken;
  for (const PolicyPoint& p : points)
    taken.push_back({sx(p.kv) - 6, sy(p.accuracy) - 6, sx(p.kv) + 6, sy(p.accuracy) + 6});
  svg += "<g class=\"points\" font-size=\"" + num(kLabelFontPx, 0) + "\">\n";
  for (size_t i = 0; i < points.size(); ++i) {
    const PolicyPoint& p = points[i];
    const double px = sx(p.kv), py = sy(p.accuracy);
    // Policies with (nearly) equal results would hide each other: draw each later one as a wider ring
    // around the same spot, so every colour stays visible without moving any point off its value.
    int under = 0;
    for (size_t j = 0; j < i; ++j) under += std::hypot(sx(points[j].kv) - px, sy(points[j].accuracy) - py) < 5;
    const std::string style = under == 0 ? "fill=\"" + colors[p.family] + "\" stroke=\"white\" stroke-width=\"1\""
                                         : "fill=\"none\" stroke=\"" + colors[p.family] + "\" stroke-width=\"2\"";
    const double radius = 4.5 + 3.0 * under;
    if (under > 0) taken.push_back({px - radius - 1, py - radius - 1, px + radius + 1, py + radius + 1});
    svg += "<circle cx=\"" + num(px) + "\" cy=\"" + num(py) + "\" r=\"" + num(radius) + "\" " + style + "><title>" +
           xml_escape(p.policy) + ": accuracy " + num(100 * p.accuracy) + "%, " + axis.tooltip + " " +
           num(100 * p.kv) + "%</title></circle>\n";
    const std::string label = policy_point_label(p.policy);
    const Box box = place_label(px, py, radius, kCharPx * label.size(), taken, line_dots);
    taken.push_back(box);
    svg += text(box.x0, box.y1 - 3, label, "fill=\"" + std::string(colors[p.family]) + "\"");
  }
  svg += "</g>\n";

  const double legend_x = kPlotRight + 20;
  double legend_y = kPlotTop + 8;
  svg += "<g class=\"legend\" font-size=\"12\">\n";
  for (const std::string& family : families) {
    svg += line(legend_x, legend_y, legend_x + 22, legend_y, "stroke=\"" + colors[family] + "\" stroke-width=\"2\"");
    svg += "<rect x=\"" + num(legend_x + 7) + "\" y=\"" + num(legend_y - 4) + "\" width=\"8\" height=\"8\" fill=\"" +
           colors[family] + "\"/>\n";
    // A learned family's label carries its artifact's description ("cskv (asvd+train, 50% KV)"): the name on the
    // first line, the description wrapped under it in smaller type, so nothing is cut.
    const std::vector<std::string> lines = legend_lines(family);
    svg += "<g><title>" + xml_escape(family) + "</title>\n";
    svg += text(legend_x + 30, legend_y + 4, lines[0]);
    for (size_t k = 1; k < lines.size(); ++k)
      svg += text(legend_x + 30, legend_y + 4 + 12.0 * k, lines[k], "font-size=\"10\"");
    svg += "</g>\n";
    legend_y += 20 + 12.0 * static_cast<double>(lines.size() - 1);
  }
  svg += line(legend_x, legend_y, legend_x + 22, legend_y,
              "stroke=\"#555\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"");
  svg += text(legend_x + 30, legend_y + 4, "Pareto front");
  svg += "</g>\n";
  return svg + "</svg>\n";
}

}  // namespace

std::string accuracy_vs_kv_svg(const EvalReport& report) {
  return accuracy_plot_svg(report, {"KV cache kept", "KV cache kept (fraction of full)", "KV",
                                    [](const EvalReport&, const CellResult& cell) { return cell.kv_ratio; }});
}

std::string accuracy_vs_ttft_svg(const EvalReport& report) {
  // Each cell's time to first token against the full cache's on the same prompts.
  auto relative = [](const EvalReport& all, const CellResult& cell) {
    for (const CellResult& full : all.cells)
      if (full.policy == "full" && full.task == cell.task && full.length == cell.length && full.ttft_ms > 0)
        return cell.ttft_ms / full.ttft_ms;
    return 1.0;
  };
  return accuracy_plot_svg(report, {"time to first token", "time to first token (fraction of the full model's)",
                                    "TTFT", relative});
}

std::string needle_heatmap_svg(const EvalReport& report, const std::string& policy) {
  std::vector<int64_t> lengths = report.lengths;
  std::vector<double> depths;
  std::vector<std::string> tasks;
  for (const CellResult& cell : report.cells) {
    if (cell.policy != policy || cell.by_depth.empty()) continue;
    if (std::find(lengths.begin(), lengths.end(), cell.length) == lengths.end()) lengths.push_back(cell.length);
    if (std::find(tasks.begin(), tasks.end(), cell.task) == tasks.end()) tasks.push_back(cell.task);
    for (const DepthAccuracy& d : cell.by_depth) depths.push_back(d.depth);
  }
  std::sort(depths.begin(), depths.end());
  // Depths come from float arithmetic in each task; treat ones closer than 1e-6 as the same row.
  depths.erase(std::unique(depths.begin(), depths.end(), [](double a, double b) { return std::fabs(a - b) < 1e-6; }),
               depths.end());
  auto depth_row = [&](double depth) {
    return static_cast<size_t>(std::lower_bound(depths.begin(), depths.end(), depth - 1e-6) - depths.begin());
  };

  // Pool samples over tasks: a cell's accuracy is the sample-weighted mean of its entries.
  std::map<std::pair<size_t, size_t>, std::pair<double, int64_t>> pooled;  // (column, row) -> (score sum, n)
  for (const CellResult& cell : report.cells) {
    if (cell.policy != policy) continue;
    const size_t column = std::find(lengths.begin(), lengths.end(), cell.length) - lengths.begin();
    for (const DepthAccuracy& d : cell.by_depth) {
      auto& [score, n] = pooled[{column, depth_row(d.depth)}];
      score += d.accuracy * static_cast<double>(d.samples), n += d.samples;
    }
  }
  int64_t low_n = std::numeric_limits<int64_t>::max(), high_n = 0;
  for (const auto& entry : pooled)
    low_n = std::min(low_n, entry.second.second), high_n = std::max(high_n, entry.second.second);

  const double left = 96, top = 66, grid_width = 420;
  const double cell_w = grid_width / std::max<size_t>(1, lengths.size());
  const double cell_h = depths.empty() ? 40 : std::min(44.0, 300.0 / depths.size());
  const double grid_height = cell_h * std::max<size_t>(1, depths.size());
  std::string subtitle = "accuracy pooled over ";
  for (size_t i = 0; i < tasks.size(); ++i) subtitle += (i ? ", " : "") + tasks[i];
  if (!pooled.empty()) subtitle += " \xC2\xB7 n per cell: " + sample_span(low_n, high_n);
  if (depths.empty()) subtitle = "no needle-depth results for this policy";
  std::string svg = svg_open(kWidth, depths.empty() ? 60 : top + grid_height + 62,
                             "Needle retrieval by depth, " + policy + ": " + subtitle);
  svg += text(kWidth / 2, 22, "Needle retrieval by depth \xE2\x80\x94 " + shorten(policy, 36),
              "text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\"");
  svg += text(kWidth / 2, 40, subtitle, "text-anchor=\"middle\" font-size=\"11\" fill=\"#555\"");
  if (depths.empty()) return svg + "</svg>\n";

  svg += "<g class=\"cells\" font-size=\"12\" text-anchor=\"middle\">\n";
  for (size_t row = 0; row < depths.size(); ++row) {
    for (size_t column = 0; column < lengths.size(); ++column) {
      const double x = left + column * cell_w, y = top + row * cell_h;
      const auto found = pooled.find({column, row});
      const bool present = found != pooled.end() && found->second.second > 0;
      bool dark = false;
      const double accuracy = present ? found->second.first / found->second.second : 0;
      const std::string fill = present ? accuracy_color(accuracy, &dark) : kMissingColor;
      svg += "<rect class=\"cell\" x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(cell_w) + "\" height=\"" +
             num(cell_h) + "\" fill=\"" + fill + "\" stroke=\"white\" stroke-width=\"1.5\">";
      svg += present ? "<title>n=" + std::to_string(found->second.second) + "</title>" : "<title>no samples</title>";
      svg += "</rect>\n";
      svg += text(x + cell_w / 2, y + cell_h / 2 + 4, present ? percent(accuracy) : "\xE2\x80\x93",
                  std::string("fill=\"") + (dark ? "white" : "#222") + "\"");
    }
  }
  svg += "</g>\n<g class=\"axes\" font-size=\"11\" fill=\"#333\">\n";
  for (size_t row = 0; row < depths.size(); ++row)
    svg += text(left - 8, top + (row + 0.5) * cell_h + 4, depth_percent(depths[row]), "text-anchor=\"end\"");
  for (size_t column = 0; column < lengths.size(); ++column)
    svg += text(left + (column + 0.5) * cell_w, top + grid_height + 16, std::to_string(lengths[column]),
                "text-anchor=\"middle\"");
  svg += text(left + grid_width / 2, top + grid_height + 38, "prompt length (tokens)",
              "text-anchor=\"middle\" font-size=\"12\"");
  const double mid_y = top + grid_height / 2;
  svg += text(30, mid_y, "needle depth (0% = prompt start)",
              "text-anchor=\"middle\" font-size=\"12\" transform=\"rotate(-90 30 " + num(mid_y) + ")\"");
  svg += "</g>\n";

  // Colour bar: 100% at the top, as the eye reads "up" as better.
  const double bar_x = left + grid_width + 34;
  svg += "<defs><linearGradient id=\"kvforge-accuracy-scale\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  for (int stop = 0; stop <= 4; ++stop) {
    bool dark = false;
    svg += "<stop offset=\"" + num(stop / 4.0, 2) + "\" stop-color=\"" + accuracy_color(stop / 4.0, &dark) + "\"/>";
  }
  svg += "</linearGradient></defs>\n<g class=\"colorbar\" font-size=\"11\" fill=\"#333\">\n";
  svg += "<rect x=\"" + num(bar_x) + "\" y=\"" + num(top) + "\" width=\"14\" height=\"" + num(grid_height) +
         "\" fill=\"url(#kvforge-accuracy-scale)\" stroke=\"#999\" stroke-width=\"0.5\"/>\n";
  for (int tick = 0; tick <= 2; ++tick) {
    const double y = top + grid_height * (1 - tick / 2.0);
    svg += line(bar_x + 14, y, bar_x + 18, y, "stroke=\"#333\"");
    svg += text(bar_x + 21, y + 4, std::to_string(tick * 50) + "%");
  }
  svg += text(bar_x + 7, top - 8, "accuracy", "text-anchor=\"middle\"");
  svg += "<rect x=\"" + num(bar_x) + "\" y=\"" + num(top + grid_height + 24) + "\" width=\"14\" height=\"10\" fill=\"" +
         kMissingColor + "\"/>\n" + text(bar_x + 20, top + grid_height + 33, "no data");
  svg += "</g>\n";
  return svg + "</svg>\n";
}

}  // namespace kvforge::eval
