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

struct Piece {
  std::string text;
  bool starts_input;  // begins at offset 0 of the whole input
};

// Tiles `text` with the matches and the gaps between them, as HF's Pattern::find_matches does.
std::vector<Span> match_spans(const std::optional<Regex>& regex, const std::string& literal, std::string_view text) {
  std::vector<std::pair<size_t, size_t>> matches;
  if (regex) {
    matches = regex->find_all(text);
  } else if (!literal.empty()) {
    for (size_t at = text.find(literal); at != std::string_view::npos; at = text.find(literal, at + literal.size())) {
      matches.emplace_back(at, at + literal.size());
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

void push_spans(const std::vector<Span>& spans, const Piece& piece, std::vector<Piece>& out) {
  for (const Span& span : spans) {
    if (!span.flag && span.end > span.begin) {
      out.push_back({piece.text.substr(span.begin, span.end - span.begin), piece.starts_input && span.begin == 0});
    }
  }
}

// Metaspace: spaces become the replacement char, the prefix per the scheme, then (with split) a cut before every
// replacement char, which stays with the text after it.
void run_metaspace(const PreTokenizeStep& step, const Piece& piece, std::vector<Piece>& out) {
  Piece replaced{"", piece.starts_input};
  replaced.text.reserve(piece.text.size() + step.replacement.size());
  const bool prepend = step.prepend_scheme == PrependScheme::kAlways ||
                       (step.prepend_scheme == PrependScheme::kFirst && piece.starts_input);
  if (prepend && piece.text[0] != ' ' && piece.text.compare(0, step.replacement.size(), step.replacement) != 0) {
    replaced.text = step.replacement;
  }
  for (const char c : piece.text) {
    if (c == ' ') {
      replaced.text += step.replacement;
    } else {
      replaced.text += c;
    }
  }
  if (!step.split) {
    out.push_back(std::move(replaced));
    return;
  }
  push_spans(apply_behavior(match_spans(std::nullopt, step.replacement, replaced.text), SplitBehavior::kMergedWithNext,
                            /*invert=*/false),
             replaced, out);
}

// One pre-tokenizer step over one (non-empty) piece, appending the pieces it becomes.
void run_step(const PreTokenizeStep& step, const Piece& piece, std::vector<Piece>& out) {
  if (step.kind == PreTokenizeStep::Kind::kSplit) {
    push_spans(apply_behavior(match_spans(step.regex, step.literal, piece.text), step.behavior, step.invert), piece,
               out);
    return;
  }
  if (step.kind == PreTokenizeStep::Kind::kMetaspace) {
    run_metaspace(step, piece, out);
    return;
  }
  // ByteLevel: prefix space, then its own regex split (Isolated), then bytes to the byte-level alphabet.
  const std::string text = step.add_prefix_space && piece.text[0] != ' ' ? " " + piece.text : piece.text;
  if (!step.regex) {
    out.push_back({bytes_to_byte_level(text), piece.starts_input});
    return;
  }
  for (const Span& span : match_spans(step.regex, "", text)) {
    if (span.end > span.begin) {
      out.push_back({bytes_to_byte_level(std::string_view(text).substr(span.begin, span.end - span.begin)),
                     piece.starts_input && span.begin == 0});
    }
  }
}

}  // namespace

std::vector<std::string> pre_tokenize(const std::vector<PreTokenizeStep>& steps, std::string_view text,
                                      bool starts_input) {
  std::vector<Piece> pieces(1, Piece{std::string(text), starts_input});
  std::vector<Piece> next_pieces;
  for (const PreTokenizeStep& step : steps) {
    next_pieces.clear();
    for (const Piece& piece : pieces) run_step(step, piece, next_pieces);
    pieces.swap(next_pieces);
  }
  std::vector<std::string> texts;
  texts.reserve(pieces.size());
  for (Piece& piece : pieces) texts.push_back(std::move(piece.text));
  return texts;
}

}  // namespace kvforge::detail
