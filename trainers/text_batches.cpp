#include "trainers/text_batches.h"

#include "eval/tasks/documents.h"
#include "runtime/input_error.h"

namespace kvforge {

TextWindows::TextWindows(const Tokenizer& tokenizer, const std::vector<std::string>& paths, int64_t length)
    : length_(length) {
  for (const std::string& path : paths)
    for (const std::string& document : tasks::read_documents(path)) {
      const std::vector<int64_t> tokens = tokenizer.encode(document, /*add_special_tokens=*/true);
      stream_.insert(stream_.end(), tokens.begin(), tokens.end());
    }
  if (static_cast<int64_t>(stream_.size()) <= length)
    fail_input(paths.empty() ? "recipe" : paths.front(), "data.files",
               "expected more than " + std::to_string(length) + " tokens of text in all, got " +
                   std::to_string(stream_.size()));
}

TokenBatch TextWindows::batch(uint64_t seed, int64_t step, int64_t micro_batch, int64_t batch_size) const {
  TokenBatch batch;
  batch.input_ids = at::empty({batch_size, length_}, at::kLong);
  batch.positions = at::arange(length_, at::kLong).repeat({batch_size, 1});
  batch.labels = at::empty({batch_size, length_}, at::kLong);
  const auto starts = static_cast<uint64_t>(stream_.size()) - static_cast<uint64_t>(length_);
  auto ids = batch.input_ids.accessor<int64_t, 2>();
  auto labels = batch.labels.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch_size; ++b) {
    const uint64_t start =
        mix_seed({seed, static_cast<uint64_t>(step), static_cast<uint64_t>(micro_batch), static_cast<uint64_t>(b)}) %
        starts;
    for (int64_t t = 0; t < length_; ++t) {
      ids[b][t] = stream_[start + t];
      labels[b][t] = stream_[start + t + 1];
    }
  }
  batch.loss_tokens = batch_size * length_;
  return batch;
}

}  // namespace kvforge
