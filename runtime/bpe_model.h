#pragma once
// Hugging Face's BPE model without dropout: the vocab, the merge ranks, the merge loop and a cache of merged
// pieces. Its input is one pre-tokenized piece, merged char by char (Unicode scalar values): in the byte-level
// alphabet for byte-level BPE, or text with "▁" for spaces for SentencePiece-style BPE, where byte_fallback spells
// a char outside the vocab as its UTF-8 bytes, "<0xE6>" "<0x9D>" "<0xB1>". Internal to the tokenizer;
// tokenizer_json.cpp fills the tables.
#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kvforge::detail {

// The key of `merges` for the adjacent pair (left id, right id).
uint64_t pair_key(int32_t left, int32_t right);

struct BpeModel {
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  std::unordered_map<std::string, int32_t> vocab;
  std::unordered_map<uint64_t, Merge> merges;  // key: pair_key(left id, right id)
  std::optional<int32_t> unk_id;
  bool fuse_unk = false;
  bool ignore_merges = false;
  bool byte_fallback = false;
  // The id of "<0xXX>" for each byte, -1 where the vocab lacks it; read only with byte_fallback.
  std::array<int32_t, 256> byte_ids{};

  // Appends the ids `piece` merges into (as HF's BPE::tokenize, ignore_merges included). Thread-safe: the only
  // state it changes is the guarded cache.
  void encode_piece(const std::string& piece, std::vector<int64_t>& out) const;

 private:
  struct Cache {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>> ids_of_piece;
  };
  mutable Cache cache_;
};

}  // namespace kvforge::detail
