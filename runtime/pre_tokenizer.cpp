#include "runtime/pre_tokenizer.h"

#include <algorithm>
#include <utility>

#include "runtime/byte_level.h"

namespace kvforge::detail {
namespace {

struct Span {
  size_t begin;
  size_t end;
  bool flag;  // first "is a delimiter match", then "is removed"
};

// Tiles `text` with the matches and the gaps between them, as HF's Pattern::find_matches does.
std::vector<Span> match_spans(const PreTokenizeStep& step, std::string_view text) {
  std::vector<std::pair<size_t, size_t>> matches;
  if (step.regex) {
    matches = step.regex->find_all(text);
  } else if (!step.literal.empty()) {
    for (size_t at = text.find(step.literal); at != std::string_view::npos;
         at = text.find(step.literal, at + step.literal.size())) {
      matches.emplace_back(at, at + step.literal.size());
    }
  }
  std::vector<Span> spans;
  size_t previous_end = 0;
  for (const auto& [begin, end] : matches) {
    if (begin > previous_end) spans.push_back({previous_end, begin, false});
    spans.push_back({begin, end, true});
    previous_end = end;
  }
  if (previous_end < text.size()) spans.push_back({previous_end, text.size(), false});
  return spans;
}

// Folds delimiter matches into their neighbours per `behavior`; returned spans carry flag = removed.
std::vector<Span> apply_behavior(std::vector<Span> spans, SplitBehavior behavior, bool invert) {
  if (invert) {
    for (Span& span : spans) span.flag = !span.flag;
  }
  std::vector<Span> out;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Span& span : spans) out.push_back({span.begin, span.end, false});
      return out;
    case SplitBehavior::kRemoved:
      return spans;
    case SplitBehavior::kContiguous:
      for (const Span& span : spans) {
        if (span.flag == previous_match && !out.empty()) {
          out.back().end = span.end;
        } else {
          out.push_back({span.begin, span.end, false});
        }
        previous_match = span.flag;
      }
      return out;
    case SplitBehavior::kMergedWithPrevious:
      for (const Span& span : spans) {
        if (span.flag && !previous_match && !out.empty()) {
          out.back().end = span.end;
        } else {
          out.push_back({span.begin, span.end, false});
        }
        previous_match = span.flag;
      }
      return out;
    case SplitBehavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->flag && !previous_match && !out.empty()) {
          out.back().begin = it->begin;
        } else {
          out.push_back({it->begin, it->end, false});
        }
        previous_match = it->flag;
      }
      std::reverse(out.begin(), out.end());
      return out;
  }
  return out;
}

// One pre-tokenizer step over one (non-empty) piece, appending the pieces it becomes.
void run_step(const PreTokenizeStep& step, const std::string& piece, std::vector<std::string>& out) {
  if (step.kind == PreTokenizeStep::Kind::kSplit) {
    for (const Span& span : apply_behavior(match_spans(step, piece), step.behavior, step.invert)) {
      if (!span.flag && span.end > span.begin) out.push_back(piece.substr(span.begin, span.end - span.begin));
    }
    return;
  }
  // ByteLevel: prefix space, then its own regex split (Isolated), then bytes to the byte-level alphabet.
  const std::string text = step.add_prefix_space && piece[0] != ' ' ? " " + piece : piece;
  if (!step.regex) {
    out.push_back(bytes_to_byte_level(text));
    return;
  }
  for (const Span& span : match_spans(step, text)) {
    if (span.end > span.begin)
      out.push_back(bytes_to_byte_level(std::string_view(text).substr(span.begin, span.end - span.begin)));
  }
}

}  // namespace

std::vector<std::string> pre_tokenize(const std::vector<PreTokenizeStep>& steps, std::string_view text) {
  std::vector<std::string> pieces(1, std::string(text));
  std::vector<std::string> next_pieces;
  for (const PreTokenizeStep& step : steps) {
    next_pieces.clear();
    for (const std::string& piece : pieces) run_step(step, piece, next_pieces);
    pieces.swap(next_pieces);
  }
  return pieces;
}

}  // namespace kvforge::detail
