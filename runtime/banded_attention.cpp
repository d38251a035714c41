#include "runtime/banded_attention.h"

#include <algorithm>

#include "runtime/transformer.h"

namespace kvforge {

at::Tensor banded_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                            const at::Tensor& query_positions, const at::Tensor& key_positions, int64_t sink,
                            int64_t window, int64_t block, int64_t slice_elements) {
  const int64_t batch = q.size(0), heads = q.size(1), tokens = q.size(2), head_dim = q.size(3);
  const int64_t kv_heads = keys.size(1), prior = keys.size(2) - tokens;
  if (block <= 0) block = std::clamp<int64_t>(window, 64, 1024);
  if (key_positions.dim() != 2 || prior < 0 || window <= 0 || tokens <= 2 * (block + window) || sink >= tokens)
    return masked_attention(q, keys, values, attention_mask(query_positions, key_positions, 0, sink, window));

  const int64_t blocks = (tokens + block - 1) / block, padded = blocks * block;
  // A block's chunk slots: window − 1 before it, then its own.
  const int64_t before = window - 1, band = block + before;
  // Queries by block ([batch, blocks, heads, block, d] and [batch, blocks, block]), not regathered: each slice below
  // copies only its own blocks.
  const at::Tensor queries = at::constant_pad_nd(q, {0, 0, 0, padded - tokens})
                                 .reshape({batch, heads, blocks, block, head_dim})
                                 .transpose(1, 2);
  const at::Tensor query_positions_by_block =
      at::constant_pad_nd(query_positions, {0, padded - tokens}, -1).view({batch, blocks, block});

  const at::Tensor chunk_keys = keys.narrow(2, prior, tokens), chunk_values = values.narrow(2, prior, tokens);
  const at::Tensor chunk_positions = key_positions.narrow(1, prior, tokens);
  // The chunk's sink tokens: its real tokens are consecutive, so position j sits at slot first + j − position(first).
  const at::Tensor first = (chunk_positions >= 0).to(at::kLong).argmax(1, /*keepdim=*/true);
  const at::Tensor sink_index = at::arange(sink, first.options());
  const at::Tensor sink_slot = first + sink_index - chunk_positions.gather(1, first);
  const at::Tensor sink_gather = sink_slot.clamp(0, tokens - 1);
  at::Tensor sink_positions = chunk_positions.gather(1, sink_gather);
  sink_positions =
      at::where((sink_slot >= 0) & (sink_slot < tokens) & (sink_positions == sink_index), sink_positions, -1);
  const at::Tensor sink_rows = sink_gather.view({batch, 1, sink, 1}).expand({batch, kv_heads, sink, head_dim});
  // Each block's band of chunk slots, the sinks left out (they come once, from the gather above).
  auto bands = [&](const at::Tensor& t) {  // [batch, kv_heads, tokens, d] -> [batch, blocks, kv_heads, band, d]
    return at::constant_pad_nd(t, {0, 0, before, padded - tokens}).unfold(2, band, block).permute({0, 2, 1, 4, 3});
  };
  at::Tensor band_positions =
      at::constant_pad_nd(chunk_positions, {before, padded - tokens}, -1).unfold(1, band, block);
  band_positions = band_positions.masked_fill(band_positions < sink, -1);

  // Blocks go through in slices: every block's keys are gathered (and, for the masked kernel, repeated to the query
  // heads), so all of them at once would be batch × blocks × (prior + sink + band) key rows. Llama-3.1-8B at 16 × 32k
  // with a 8k window: 77 GiB of repeated K and V, which ran the prefill out of memory.
  const int64_t elements_per_block = batch * heads * (prior + sink + band) * head_dim;
  const int64_t blocks_per_slice = std::clamp<int64_t>(slice_elements / elements_per_block, 1, blocks);
  const at::Tensor key_bands = bands(chunk_keys), value_bands = bands(chunk_values);
  const at::Tensor sink_keys = chunk_keys.gather(2, sink_rows), sink_values = chunk_values.gather(2, sink_rows);
  const at::Tensor held_positions = key_positions.narrow(1, 0, prior);
  // Outputs in the queries' block layout: [batch, blocks, heads, block, d].
  at::Tensor out = at::empty({batch, blocks, heads, block, head_dim}, q.options());
  for (int64_t first_block = 0; first_block < blocks; first_block += blocks_per_slice) {
    const int64_t count = std::min(blocks_per_slice, blocks - first_block);
    auto slice_of = [&](const at::Tensor& held, const at::Tensor& sinks, const at::Tensor& chunk_bands) {
      return at::cat({held.narrow(2, 0, prior).unsqueeze(1).expand({batch, count, kv_heads, prior, head_dim}),
                      sinks.unsqueeze(1).expand({batch, count, kv_heads, sink, head_dim}),
                      chunk_bands.narrow(1, first_block, count)},
                     3)
          .reshape({batch * count, kv_heads, prior + sink + band, head_dim});
    };
    const at::Tensor slice_key_positions = at::cat({held_positions.unsqueeze(1).expand({batch, count, prior}),
                                                    sink_positions.unsqueeze(1).expand({batch, count, sink}),
                                                    band_positions.narrow(1, first_block, count)},
                                                   2)
                                               .reshape({batch * count, prior + sink + band});
    const at::Tensor slice_query_positions =
        query_positions_by_block.narrow(1, first_block, count).reshape({batch * count, block});
    const at::Tensor mask = attention_mask(slice_query_positions, slice_key_positions, 0, sink, window);
    const at::Tensor slice_q = queries.narrow(1, first_block, count).reshape({batch * count, heads, block, head_dim});
    // [batch * count, heads, block, d]
    const at::Tensor attended = masked_attention(slice_q, slice_of(keys, sink_keys, key_bands),
                                                 slice_of(values, sink_values, value_bands), mask);
    out.narrow(1, first_block, count).copy_(attended.view({batch, count, heads, block, head_dim}));
  }
  return out.transpose(1, 2).reshape({batch, heads, padded, head_dim}).narrow(2, 0, tokens);
}

}  // namespace kvforge
