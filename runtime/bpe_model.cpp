#include "runtime/bpe_model.h"

#include <algorithm>
#include <queue>
#include <utility>

#include "runtime/byte_level.h"

namespace kvforge::detail {
namespace {

// Short pieces (words) repeat and are worth caching; a long run such as 10k 'x' rarely does.
constexpr size_t kMaxCachedPieceBytes = 256;
// Bounds the cache on adversarial input; past it, pieces are merged without being cached.
constexpr size_t kMaxCacheEntries = size_t{1} << 18;
// No neighbour in the symbol list; also the id of a symbol merged into its left neighbour.
constexpr int32_t kNone = -1;

// HF's BPE::merge_word + Word::merge_all without dropout: chars not in the vocab become their byte tokens (with
// byte_fallback, when the vocab has all of them), else unk (fused when fuse_unk), else vanish; then the lowest-ranked
// adjacent pair merges first, leftmost on ties.
void bpe_merge(const BpeModel& model, std::string_view piece, std::vector<int32_t>& out) {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  std::vector<Symbol> symbols;
  bool unk_pending = false;
  const auto push = [&symbols](int32_t id) {
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, kNone});
    if (index > 0) symbols[index - 1].next = index;
  };
  std::string character;
  for (size_t offset = 0; offset < piece.size();) {
    size_t length = 0;
    decode_utf8_char(piece, offset, length);
    character.assign(piece.substr(offset, length));
    offset += length;
    const auto found = model.vocab.find(character);
    if (found != model.vocab.end()) {
      if (unk_pending) push(*model.unk_id);
      unk_pending = false;
      push(found->second);
    } else if (model.byte_fallback && std::all_of(character.begin(), character.end(), [&model](char byte) {
                 return model.byte_ids[static_cast<unsigned char>(byte)] != kNone;
               })) {
      // As HF: the byte tokens go in without first emitting a pending unk.
      for (const char byte : character) push(model.byte_ids[static_cast<unsigned char>(byte)]);
    } else if (model.unk_id) {
      if (unk_pending && !model.fuse_unk) push(*model.unk_id);
      unk_pending = true;
    }
  }
  if (unk_pending) push(*model.unk_id);

  struct Candidate {
    int32_t rank;
    int32_t position;
    int32_t left_id;
    int32_t right_id;
    int32_t merged_id;
  };
  const auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.position > b.position;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> queue(later);
  const auto consider = [&](int32_t position) {
    const int32_t next = symbols[position].next;
    if (next == kNone) return;
    const auto merge = model.merges.find(pair_key(symbols[position].id, symbols[next].id));
    if (merge == model.merges.end()) return;
    queue.push({merge->second.rank, position, symbols[position].id, symbols[next].id, merge->second.merged_id});
  };
  for (int32_t position = 0; position + 1 < static_cast<int32_t>(symbols.size()); ++position) consider(position);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.position];
    // Entries go stale when a neighbour merged first; the pair must still be there as recorded.
    if (left.id != top.left_id || left.next == kNone || symbols[left.next].id != top.right_id) continue;
    Symbol& right = symbols[left.next];
    left.id = top.merged_id;
    left.next = right.next;
    if (right.next != kNone) symbols[right.next].prev = top.position;
    right.id = kNone;
    if (left.prev != kNone) consider(left.prev);
    consider(top.position);
  }
  for (int32_t position = symbols.empty() ? kNone : 0; position != kNone; position = symbols[position].next) {
    out.push_back(symbols[position].id);
  }
}

}  // namespace

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

void BpeModel::encode_piece(const std::string& piece, std::vector<int64_t>& out) const {
  if (ignore_merges) {
    const auto whole = vocab.find(piece);
    if (whole != vocab.end()) {
      out.push_back(whole->second);
      return;
    }
  }
  const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_.mutex);
    const auto hit = cache_.ids_of_piece.find(piece);
    if (hit != cache_.ids_of_piece.end()) {
      out.insert(out.end(), hit->second.begin(), hit->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  bpe_merge(*this, piece, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_.mutex);
    if (cache_.ids_of_piece.size() < kMaxCacheEntries) cache_.ids_of_piece.emplace(piece, std::move(ids));
  }
}

}  // namespace kvforge::detail
