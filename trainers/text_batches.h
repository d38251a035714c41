#pragma once
// Training batches cut from documents (calibration text such as a Pile subset): every document tokenized once into
// one stream, each sequence a window of `length` tokens at an offset that is a pure function of (seed, step,
// micro-batch, row), so resumed and data-parallel runs see the batches of an uninterrupted run.
#include <string>
#include <vector>

#include "runtime/tokenizer.h"
#include "trainers/task_batches.h"

namespace kvforge {

class TextWindows {
 public:
  // InputError naming the file when the documents hold fewer than `length` + 1 tokens in all.
  TextWindows(const Tokenizer& tokenizer, const std::vector<std::string>& paths, int64_t length);

  // Labels are the next token everywhere (no padding: every window is full).
  TokenBatch batch(uint64_t seed, int64_t step, int64_t micro_batch, int64_t batch_size) const;
  int64_t stream_tokens() const { return static_cast<int64_t>(stream_.size()); }

 private:
  std::vector<int64_t> stream_;
  int64_t length_;
};

}  // namespace kvforge
