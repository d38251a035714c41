#include "runtime/hybrid_attention.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/bindings.h"

namespace kvforge {
namespace {

constexpr double kNegativeInfinity = -std::numeric_limits<double>::infinity();

void check(const HybridInputs& inputs, const HybridAttentionConfig& config) {
  if (config.window < 1) throw std::invalid_argument("hybrid attention: window must be >= 1");
  if (config.kind == HybridKind::kLolcats && !inputs.window_logits.defined())
    throw std::invalid_argument("hybrid attention: LoLCATs needs window_logits [heads]");
  if (config.kind == HybridKind::kLolcats && inputs.log_gates.defined())
    throw std::invalid_argument("hybrid attention: LoLCATs has no gates (its shared normaliser would not cancel them)");
  if (config.kind == HybridKind::kLolcats && config.linear_keys != LinearKeys::kOutsideWindow)
    throw std::invalid_argument("hybrid attention: LoLCATs' linear terms cover only keys outside the window");
}

// y = num / den where den > 0, else 0 (no key in the branch: the linear branch before the window has filled).
at::Tensor safe_divide(const at::Tensor& numerator, const at::Tensor& denominator) {
  const at::Tensor positive = denominator > 0;
  return at::where(positive.unsqueeze(-1),
                   numerator / at::where(positive, denominator, at::ones_like(denominator)).unsqueeze(-1),
                   at::zeros_like(numerator));
}

// Padding keys out of both branches: zero key features (no linear weight) and values; the window masks them.
HybridInputs without_padding_keys(const HybridInputs& inputs) {
  if (!inputs.key_valid.defined()) return inputs;
  HybridInputs masked = inputs;
  const at::Tensor valid = inputs.key_valid.unsqueeze(1).unsqueeze(-1).to(inputs.values.scalar_type());
  masked.key_features = inputs.key_features * valid;
  masked.values = inputs.values * valid;
  if (inputs.log_gates.defined()) masked.log_gates = inputs.log_gates * valid.squeeze(-1);  // padding decays nothing
  return masked;
}

// The window branch from its scores (masked entries -inf) and values: Lizard's softmax with sink logits in the
// denominator, or LoLCATs' weighted, max-scaled terms to be shared with the linear ones.
struct WindowTerms {
  at::Tensor numerator;    // [..., value_dim]
  at::Tensor denominator;  // [...]
};
WindowTerms window_terms(const at::Tensor& scores, const at::Tensor& values, const HybridInputs& inputs,
                         const HybridAttentionConfig& config) {
  const int64_t extra = scores.dim() - 4;     // dims between heads and [queries, keys]: 0, or 1 (chunks)
  auto per_head = [&](const at::Tensor& t) {  // [heads, ...] -> broadcastable against scores' leading dims
    at::Tensor view = t.unsqueeze(0);
    for (int64_t i = 0; i < extra; ++i) view = view.unsqueeze(2);
    return view;
  };
  at::Tensor row_max = std::get<0>(scores.max(-1, /*keepdim=*/true));
  at::Tensor sinks;
  if (config.kind == HybridKind::kLizard && inputs.sink_logits.defined()) {
    sinks = per_head(inputs.sink_logits).unsqueeze(-2).to(scores.scalar_type());  // [1, heads, (1,) 1, sinks]
    row_max = at::maximum(row_max, std::get<0>(sinks.max(-1, /*keepdim=*/true)));
  }
  row_max = row_max.masked_fill(at::isinf(row_max), 0);  // a row that sees no key (a padding query): 0 out
  at::Tensor weights = at::exp(scores - row_max);
  if (config.kind == HybridKind::kLolcats)
    weights =
        weights * per_head(at::sigmoid(inputs.window_logits)).unsqueeze(-1).unsqueeze(-1).to(scores.scalar_type());
  WindowTerms terms{at::matmul(weights, values), weights.sum(-1)};
  if (sinks.defined()) terms.denominator = terms.denominator + at::exp(sinks - row_max).sum(-1);
  return terms;
}

// Y from the two branches' numerators and denominators (an empty branch contributes 0).
at::Tensor combine(const WindowTerms& window, const at::Tensor& linear_numerator, const at::Tensor& linear_denominator,
                   const HybridAttentionConfig& config) {
  if (config.kind == HybridKind::kLolcats)
    return safe_divide(window.numerator + linear_numerator, window.denominator + linear_denominator);
  return safe_divide(linear_numerator, linear_denominator) +
         config.window_scale * safe_divide(window.numerator, window.denominator);
}

// Keys and values of each chunk's window: for queries [nC, nC + C) the keys [nC - window + 1, nC + C), as
// [batch, heads, chunks, C + window - 1, dim] (positions before 0 are zeros, for the caller to mask).
at::Tensor window_blocks(const at::Tensor& x, int64_t window, int64_t chunk, int64_t chunks) {
  std::vector<int64_t> front = x.sizes().vec(), back = x.sizes().vec();
  front[2] = window - 1;
  back[2] = chunks * chunk - x.size(2);
  const at::Tensor padded = at::cat({at::zeros(front, x.options()), x, at::zeros(back, x.options())}, 2);
  return padded.unfold(2, chunk + window - 1, chunk).transpose(-1, -2);  // [b, h, n, C + w - 1, dim]
}

}  // namespace

at::Tensor gated_linear_attention(const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& values,
                                  const at::Tensor& log_gates, int64_t chunk) {
  const int64_t batch = queries.size(0), heads = queries.size(1), tokens = queries.size(2);
  const int64_t features = queries.size(3), value_dim = values.size(3);
  const int64_t chunks = (tokens + chunk - 1) / chunk, padded = chunks * chunk;
  auto pad = [&](const at::Tensor& x) {
    if (padded == tokens) return x;
    std::vector<int64_t> shape = x.sizes().vec();
    shape[2] = padded - tokens;
    return at::cat({x, at::zeros(shape, x.options())}, 2);
  };
  const at::Tensor q = pad(queries).view({batch, heads, chunks, chunk, features});
  const at::Tensor k = pad(keys).view({batch, heads, chunks, chunk, features});
  const at::Tensor v = pad(values).view({batch, heads, chunks, chunk, value_dim});
  // Cumulative log gates in fp32 (or float64) whatever the activations' dtype: differences of long bf16 sums would
  // lose the decays; the factors exp(·) <= 1 then round to the activations' dtype.
  const at::ScalarType exact = at::promote_types(log_gates.scalar_type(), at::kFloat);
  const at::ScalarType dtype = q.scalar_type();
  const at::Tensor c = pad(log_gates.unsqueeze(-1)).view({batch, heads, chunks, chunk}).to(exact).cumsum(-1);
  const at::Tensor causal = at::ones({chunk, chunk}, queries.options().dtype(at::kBool)).tril();
  const at::Tensor decay =
      at::exp((c.unsqueeze(-1) - c.unsqueeze(-2)).masked_fill(causal.logical_not(), kNegativeInfinity)).to(dtype);
  const at::Tensor intra = at::matmul(at::matmul(q, k.transpose(-1, -2)) * decay, v);
  // Each chunk's keys as they stand at its end, and the state every chunk starts from.
  const at::Tensor total = c.select(-1, chunk - 1);                                    // [b, h, n]
  const at::Tensor to_end = at::exp(total.unsqueeze(-1) - c).unsqueeze(-1).to(dtype);  // [b, h, n, C, 1]
  const at::Tensor added = at::matmul((k * to_end).transpose(-1, -2), v);              // [b, h, n, f, dv]
  // Chunk n starts from Σ_{m<n} exp(P_n - P_{m+1}) added_m, P the exclusive cumulative sum of the chunk totals: one
  // matmul over chunks (every factor <= 1) instead of a chunk-by-chunk loop, whose backward is as long.
  const at::Tensor prefix = total.cumsum(-1) - total;  // P_n
  const at::Tensor earlier = at::ones({chunks, chunks}, queries.options().dtype(at::kBool)).tril(-1);
  const at::Tensor carry = at::exp((prefix.unsqueeze(-1) - (prefix + total).unsqueeze(-2))
                                       .masked_fill(earlier.logical_not(), kNegativeInfinity));  // [b, h, n, n]
  const at::Tensor starts = at::matmul(carry.to(added.scalar_type()), added.reshape({batch, heads, chunks, -1}))
                                .view({batch, heads, chunks, features, value_dim});
  const at::Tensor inter = at::matmul(q * at::exp(c).unsqueeze(-1).to(dtype), starts);
  return (intra + inter).view({batch, heads, padded, value_dim}).narrow(2, 0, tokens);
}

at::Tensor hedgehog_features(const at::Tensor& x, const at::Tensor& weight) {
  // x [b, h, t, d] · W [h, d, f] -> [b, h, t, f]
  const at::Tensor projected = at::matmul(x, weight.unsqueeze(0));
  // Clamped as LoLCATs does, so a saturated softmax never hands the linear branch an exact zero.
  return at::cat({at::softmax(projected, -1), at::softmax(-projected, -1)}, -1).clamp_min(1e-12);
}

at::Tensor hybrid_attention_quadratic(const HybridInputs& unmasked, const HybridAttentionConfig& config) {
  check(unmasked, config);
  const HybridInputs inputs = without_padding_keys(unmasked);
  const int64_t tokens = inputs.queries.size(2), window = config.window;
  const double scale = 1.0 / std::sqrt(static_cast<double>(inputs.queries.size(3)));
  const at::TensorOptions index = inputs.queries.options().dtype(at::kLong);
  const at::Tensor i = at::arange(tokens, index).unsqueeze(1), j = at::arange(tokens, index).unsqueeze(0);
  const at::Tensor causal = j <= i;
  at::Tensor in_window = causal & (i - j < window);
  if (inputs.key_valid.defined()) in_window = in_window & inputs.key_valid.unsqueeze(1).unsqueeze(2);
  const at::Tensor in_linear = config.linear_keys == LinearKeys::kAll ? causal : causal & (i - j >= window);

  const at::Tensor scores = (at::matmul(inputs.queries, inputs.keys.transpose(-1, -2)) * scale)
                                .masked_fill(in_window.logical_not(), kNegativeInfinity);
  const WindowTerms windowed = window_terms(scores, inputs.values, inputs, config);
  at::Tensor linear = at::matmul(inputs.query_features, inputs.key_features.transpose(-1, -2));
  if (inputs.log_gates.defined()) {
    const at::Tensor c = inputs.log_gates.cumsum(-1);
    linear = linear * at::exp((c.unsqueeze(-1) - c.unsqueeze(-2)).masked_fill(causal.logical_not(), kNegativeInfinity));
  }
  linear = linear.masked_fill(in_linear.logical_not(), 0);
  return combine(windowed, at::matmul(linear, inputs.values), linear.sum(-1), config);
}

at::Tensor hybrid_attention_chunked(const HybridInputs& unmasked, const HybridAttentionConfig& config, int64_t chunk) {
  check(unmasked, config);
  const HybridInputs inputs = without_padding_keys(unmasked);
  if (chunk < 1) throw std::invalid_argument("hybrid attention: chunk must be >= 1");
  const int64_t batch = inputs.queries.size(0), heads = inputs.queries.size(1), tokens = inputs.queries.size(2);
  const int64_t value_dim = inputs.values.size(3), window = config.window;
  const int64_t chunks = (tokens + chunk - 1) / chunk;
  const double scale = 1.0 / std::sqrt(static_cast<double>(inputs.queries.size(3)));

  // Window: each chunk of queries against its band of keys.
  const at::Tensor block_keys = window_blocks(inputs.keys, window, chunk, chunks);
  const at::Tensor block_values = window_blocks(inputs.values, window, chunk, chunks);
  const at::Tensor padded_queries =
      at::cat({inputs.queries,
               at::zeros({batch, heads, chunks * chunk - tokens, inputs.queries.size(3)}, inputs.queries.options())},
              2);
  const at::Tensor q = padded_queries.view({batch, heads, chunks, chunk, inputs.queries.size(3)});
  const at::TensorOptions index = inputs.queries.options().dtype(at::kLong);
  const at::Tensor a = at::arange(chunk, index).unsqueeze(1), k = at::arange(chunk + window - 1, index).unsqueeze(0);
  const at::Tensor key_position = (at::arange(chunks, index) * chunk - (window - 1)).view({chunks, 1, 1}) + k;
  at::Tensor visible = ((k >= a) & (k <= a + window - 1)).unsqueeze(0) & (key_position >= 0);  // [n, C, C+w-1]
  if (inputs.key_valid.defined()) {  // the band's padding keys: [b, 1, n, 1, C+w-1]
    const at::Tensor valid = window_blocks(inputs.key_valid.unsqueeze(1).unsqueeze(-1).to(inputs.values.scalar_type()),
                                           window, chunk, chunks);
    visible = visible & (valid.squeeze(-1).unsqueeze(-2) > 0.5);
  }
  const at::Tensor scores =
      (at::matmul(q, block_keys.transpose(-1, -2)) * scale).masked_fill(visible.logical_not(), kNegativeInfinity);
  WindowTerms windowed = window_terms(scores, block_values, inputs, config);
  windowed.numerator = windowed.numerator.reshape({batch, heads, chunks * chunk, value_dim}).narrow(2, 0, tokens);
  windowed.denominator = windowed.denominator.reshape({batch, heads, chunks * chunk}).narrow(2, 0, tokens);

  // Linear: query t reads the state after key t - shift (shift = window when only keys outside the window count),
  // so the queries move `shift` places earlier and the outputs back; the decay from t - shift to t is one scalar per
  // head and query, common to numerator and denominator, so it cancels.
  const int64_t shift = config.linear_keys == LinearKeys::kOutsideWindow ? std::min(window, tokens) : 0;
  const at::Tensor ones = at::ones({batch, heads, tokens, 1}, inputs.values.options());
  const at::Tensor values_and_ones = at::cat({inputs.values, ones}, -1);
  at::Tensor shifted_queries = inputs.query_features.narrow(2, shift, tokens - shift);
  shifted_queries = at::cat({shifted_queries, at::zeros_like(inputs.query_features.narrow(2, 0, shift))}, 2);
  const at::Tensor log_gates =
      inputs.log_gates.defined() ? inputs.log_gates : at::zeros({batch, heads, tokens}, inputs.values.options());
  at::Tensor linear = gated_linear_attention(shifted_queries, inputs.key_features, values_and_ones, log_gates, chunk);
  linear = at::cat({at::zeros_like(linear.narrow(2, 0, shift)), linear.narrow(2, 0, tokens - shift)}, 2);
  return combine(windowed, linear.narrow(-1, 0, value_dim), linear.select(-1, value_dim), config);
}

HybridDecodeState::HybridDecodeState(const HybridAttentionConfig& config, int64_t batch, int64_t heads,
                                     int64_t features, int64_t head_dim, int64_t value_dim,
                                     const at::TensorOptions& options)
    : config_(config) {
  if (config.window < 1) throw std::invalid_argument("hybrid attention: window must be >= 1");
  // The running sums and gates stay in fp32 (or float64) whatever the activations' dtype: S sums every past token.
  const at::TensorOptions exact = options.dtype(at::promote_types(options.dtype().toScalarType(), at::kFloat));
  state_ = at::zeros({batch, heads, features, value_dim}, exact);
  normaliser_ = at::zeros({batch, heads, features}, exact);
  keys_ = at::zeros({batch, heads, config.window, head_dim}, options);
  values_ = at::zeros({batch, heads, config.window, value_dim}, options);
  key_features_ = at::zeros({batch, heads, config.window, features}, options);
  log_gates_ = at::zeros({batch, heads, config.window}, exact);
  valid_ = at::zeros({batch, config.window}, options.dtype(at::kBool));
}

int64_t HybridDecodeState::bytes() const {
  int64_t total = 0;
  for (const at::Tensor* t : {&state_, &normaliser_, &keys_, &values_, &key_features_, &log_gates_, &valid_})
    total += t->nbytes();
  return total;
}

at::Tensor HybridDecodeState::step(const at::Tensor& query_features, const at::Tensor& key_features,
                                   const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                   const at::Tensor& log_gate, const at::Tensor& sink_logits,
                                   const at::Tensor& window_logits, const at::Tensor& valid) {
  kernels::HybridDecodeTensors tensors{state_, normaliser_, keys_, values_, key_features_, log_gates_, valid_};
  const kernels::HybridDecodeToken token{query_features, key_features, query,         key,  value,
                                         log_gate,       sink_logits,  window_logits, valid};
  last_step_fused_ = use_kernel && kernels::hybrid_decode_step_supported(tensors, token);
  if (last_step_fused_) {
    const at::Tensor out = kernels::hybrid_decode_step(tensors, token, tokens_, config_.kind == HybridKind::kLolcats,
                                                       config_.linear_keys == LinearKeys::kAll, config_.window_scale);
    ++tokens_;
    return out;
  }
  const int64_t window = config_.window, slot = tokens_ % window;
  const at::Tensor real = valid.defined() ? valid.to(at::kBool) : at::ones_like(valid_.select(1, 0));
  const at::Tensor keep = real.view({-1, 1}).to(state_.scalar_type());  // [b, 1]: padding adds nothing, decays nothing
  const at::Tensor gate = (log_gate.defined() ? log_gate.squeeze(-1).to(log_gates_.scalar_type())
                                              : at::zeros_like(log_gates_.select(2, 0))) *
                          keep;
  // S_s = γ_s S_{s-1} + φ(k_s) v_sᵀ for the token that joins the state: the one leaving the window, or this one.
  auto fold = [&](const at::Tensor& features, const at::Tensor& values, const at::Tensor& token_gate) {
    const at::Tensor decay = at::exp(token_gate);  // [b, h]
    const at::Tensor exact_features = features.to(state_.scalar_type());
    state_ = state_ * decay.unsqueeze(-1).unsqueeze(-1) +
             exact_features.unsqueeze(-1) * values.to(state_.scalar_type()).unsqueeze(-2);
    normaliser_ = normaliser_ * decay.unsqueeze(-1) + exact_features;
  };
  if (config_.linear_keys == LinearKeys::kOutsideWindow && tokens_ >= window)
    fold(key_features_.select(2, slot), values_.select(2, slot), log_gates_.select(2, slot));
  keys_.select(2, slot).copy_(key.squeeze(2));
  values_.select(2, slot).copy_(value.squeeze(2) * keep.unsqueeze(-1));
  key_features_.select(2, slot).copy_(key_features.squeeze(2) * keep.unsqueeze(-1));
  log_gates_.select(2, slot).copy_(gate);
  valid_.select(1, slot).copy_(real);
  if (config_.linear_keys == LinearKeys::kAll)
    fold(key_features_.select(2, slot), values_.select(2, slot), log_gates_.select(2, slot));
  ++tokens_;

  HybridInputs parameters;
  parameters.sink_logits = sink_logits;
  parameters.window_logits = window_logits;
  const int64_t filled = std::min(tokens_, window);
  const double scale = 1.0 / std::sqrt(static_cast<double>(query.size(3)));
  const at::Tensor padding = valid_.narrow(1, 0, filled).logical_not().view({-1, 1, 1, filled});
  const at::Tensor scores = (at::matmul(query, keys_.narrow(2, 0, filled).transpose(-1, -2)) * scale)
                                .masked_fill(padding, kNegativeInfinity);  // [b, h, 1, w]
  const WindowTerms windowed = window_terms(scores, values_.narrow(2, 0, filled), parameters, config_);
  const at::Tensor exact_query = query_features.to(state_.scalar_type());
  const at::Tensor linear_numerator = at::matmul(exact_query, state_);  // [b, h, 1, dv]
  const at::Tensor linear_denominator = at::matmul(exact_query, normaliser_.unsqueeze(-1)).squeeze(-1);  // [b, h, 1]
  return combine(windowed, linear_numerator, linear_denominator, config_).to(value.scalar_type());
}

void HybridDecodeState::absorb(const HybridInputs& unmasked) {
  if (tokens_ != 0) throw std::logic_error("hybrid attention: absorb() needs an empty state");
  const HybridInputs inputs = without_padding_keys(unmasked);
  const int64_t tokens = inputs.keys.size(2), window = config_.window;
  // The state: keys 0..n-1 decayed to key n-1 (n = tokens - window, or every token when the linear branch reads all),
  // padding neither adding nor decaying.
  const int64_t folded = config_.linear_keys == LinearKeys::kAll ? tokens : std::max<int64_t>(tokens - window, 0);
  const at::Tensor gates = inputs.log_gates.defined() ? inputs.log_gates : at::zeros_like(inputs.values.select(-1, 0));
  if (folded > 0) {
    const at::Tensor c = gates.narrow(2, 0, folded).to(state_.scalar_type()).cumsum(-1);
    const at::Tensor decay = at::exp(c.narrow(2, folded - 1, 1) - c).unsqueeze(-1);  // [b, h, n, 1]
    const at::Tensor features = inputs.key_features.narrow(2, 0, folded).to(state_.scalar_type()) * decay;
    state_ = at::matmul(features.transpose(-1, -2), inputs.values.narrow(2, 0, folded).to(state_.scalar_type()));
    normaliser_ = features.sum(2);
  }
  // The ring: the last `window` tokens, each at slot position % window.
  for (int64_t p = std::max<int64_t>(tokens - window, 0); p < tokens; ++p) {
    const int64_t slot = p % window;
    keys_.select(2, slot).copy_(inputs.keys.select(2, p));
    values_.select(2, slot).copy_(inputs.values.select(2, p));
    key_features_.select(2, slot).copy_(inputs.key_features.select(2, p));
    log_gates_.select(2, slot).copy_(gates.select(2, p));
    valid_.select(1, slot).copy_(inputs.key_valid.defined() ? inputs.key_valid.select(1, p)
                                                            : at::ones_like(valid_.select(1, slot)));
  }
  tokens_ = tokens;
}

at::Tensor hybrid_attention_recurrent(const HybridInputs& inputs, const HybridAttentionConfig& config) {
  check(inputs, config);
  const int64_t batch = inputs.queries.size(0), heads = inputs.queries.size(1), tokens = inputs.queries.size(2);
  HybridDecodeState state(config, batch, heads, inputs.query_features.size(3), inputs.queries.size(3),
                          inputs.values.size(3), inputs.values.options());
  std::vector<at::Tensor> outputs;
  for (int64_t t = 0; t < tokens; ++t) {
    auto at_t = [t](const at::Tensor& x) { return x.narrow(2, t, 1); };
    outputs.push_back(state.step(
        at_t(inputs.query_features), at_t(inputs.key_features), at_t(inputs.queries), at_t(inputs.keys),
        at_t(inputs.values), inputs.log_gates.defined() ? at_t(inputs.log_gates) : at::Tensor(), inputs.sink_logits,
        inputs.window_logits, inputs.key_valid.defined() ? inputs.key_valid.select(1, t) : at::Tensor()));
  }
  return at::cat(outputs, 2);
}

}  // namespace kvforge
