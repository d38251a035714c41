#pragma once
// Internal helpers behind report.h's SVG plots, exposed so tests can check them directly.
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace kvforge::eval {

// Escapes & < > " ' so any policy, task or model name is safe inside SVG text and attributes.
std::string xml_escape(const std::string& text);

// Indices of the points (x = KV fraction kept, y = accuracy) that no other point dominates, i.e. no
// other point has x' <= x and y' >= y with one of them strict; sorted by x, then y. Equal points all stay.
std::vector<size_t> pareto_front(const std::vector<std::pair<double, double>>& points);

// "snapkv:budget=0.25" -> "snapkv"; a label without ':' is its own family ("full").
std::string policy_family(const std::string& policy);

// The short point label: the text after ':' ("budget=0.25"), keys cut to one letter when that is long
// ("w=64,s=4"); the whole label when there is no ':'.
std::string policy_point_label(const std::string& policy);

}  // namespace kvforge::eval
