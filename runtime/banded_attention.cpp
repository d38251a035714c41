#include "runtime/banded_attention.h"

#include <algorithm>

#include "runtime/transformer.h"

namespace kvforge {

at::Tensor banded_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                            const at::Tensor& query_positions, const at::Tensor& key_positions, int64_t sink,
                            int64_t window, int64_t block) {
  const int64_t batch = q.size(0), heads = q.size(1), tokens = q.size(2), head_dim = q.size(3);
  const int64_t kv_heads = keys.size(1), prior = keys.size(2) - tokens;
  if (block <= 0) block = std::clamp<int64_t>(window, 64, 1024);
  if (key_positions.dim() != 2 || prior < 0 || window <= 0 || tokens <= 2 * (block + window) || sink >= tokens)
    return masked_attention(q, keys, values, attention_mask(query_positions, key_positions, 0, sink, window));

  const int64_t blocks = (tokens + block - 1) / block, padded = blocks * block;
  const int64_t before = window - 1,
                band = block + before;        // a block's chunk slots: window − 1 before it, then its own
  auto by_block = [&](const at::Tensor& t) {  // [batch, n, padded, d] -> [batch * blocks, n, block, d]
    return t.view({batch, t.size(1), blocks, block, t.size(3)})
        .transpose(1, 2)
        .reshape({batch * blocks, t.size(1), block, t.size(3)});
  };
  const at::Tensor block_q = by_block(at::constant_pad_nd(q, {0, 0, 0, padded - tokens}));
  const at::Tensor block_query_positions =
      at::constant_pad_nd(query_positions, {0, padded - tokens}, -1).view({batch * blocks, block});

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

  auto per_block = [&](const at::Tensor& held, const at::Tensor& chunk) {  // [batch * blocks, kv_heads, L, d]
    const at::Tensor sinks = chunk.gather(2, sink_rows);
    return at::cat({held.narrow(2, 0, prior).unsqueeze(1).expand({batch, blocks, kv_heads, prior, head_dim}),
                    sinks.unsqueeze(1).expand({batch, blocks, kv_heads, sink, head_dim}), bands(chunk)},
                   3)
        .reshape({batch * blocks, kv_heads, prior + sink + band, head_dim});
  };
  const at::Tensor block_keys = per_block(keys, chunk_keys), block_values = per_block(values, chunk_values);
  const at::Tensor block_key_positions =
      at::cat({key_positions.narrow(1, 0, prior).unsqueeze(1).expand({batch, blocks, prior}),
               sink_positions.unsqueeze(1).expand({batch, blocks, sink}), band_positions},
              2)
          .reshape({batch * blocks, prior + sink + band});
  const at::Tensor mask = attention_mask(block_query_positions, block_key_positions, 0, sink, window);
  const at::Tensor out =
      masked_attention(block_q, block_keys, block_values, mask);  // [batch * blocks, heads, block, d]
  return out.view({batch, blocks, heads, block, head_dim})
      .transpose(1, 2)
      .reshape({batch, heads, padded, head_dim})
      .narrow(2, 0, tokens);
}

}  // namespace kvforge
