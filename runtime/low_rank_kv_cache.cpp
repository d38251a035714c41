#include "runtime/low_rank_kv_cache.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

#include "runtime/rms_norm.h"
#include "runtime/rope.h"

namespace kvforge {
namespace {

LowRankLayer converted(const LowRankLayer& layer, const at::TensorOptions& options) {
  auto to = [&](const at::Tensor& tensor) { return tensor.defined() ? tensor.to(options).contiguous() : tensor; };
  return {to(layer.key_down), to(layer.key_up),     to(layer.value_down), to(layer.value_up),
          to(layer.key_bias), to(layer.value_bias), to(layer.key_norm)};
}

// latents [batch, tokens, rank] · upᵀ (+ bias) -> [batch, kv_heads, tokens, head_dim]
at::Tensor lifted(const at::Tensor& latents, const at::Tensor& up, const at::Tensor& bias, int64_t kv_heads,
                  int64_t head_dim) {
  at::Tensor out = bias.defined() ? at::addmm(bias, latents.reshape({-1, latents.size(2)}), up.t())
                                  : at::mm(latents.reshape({-1, latents.size(2)}), up.t());
  return out.view({latents.size(0), latents.size(1), kv_heads, head_dim}).transpose(1, 2);
}

at::Tensor appended(const at::Tensor& store, const at::Tensor& more, int64_t dim) {
  return store.defined() && store.size(dim) > 0 ? at::cat({store, more}, dim) : more;
}

// Writes `more` ([batch, n, ...]) at slots [length, length + n) of `buffer` ([batch, capacity, ...]), doubling the
// capacity (new slots filled with `fill`) when it is short.
void write_slots(at::Tensor& buffer, int64_t length, const at::Tensor& more, double fill) {
  const int64_t needed = length + more.size(1);
  if (needed > buffer.size(1)) {
    std::vector<int64_t> shape = buffer.sizes().vec();
    shape[1] = std::max<int64_t>(needed, 2 * buffer.size(1));
    at::Tensor grown = at::full(shape, fill, buffer.options());
    grown.narrow(1, 0, length).copy_(buffer.narrow(1, 0, length));
    buffer = grown;
  }
  buffer.narrow(1, length, more.size(1)).copy_(more);
}

void append_block(QuantizedBlock& store, const QuantizedBlock& more, int64_t dim) {
  store.codes = appended(store.codes, more.codes, dim);
  store.scale = appended(store.scale, more.scale, dim);
  store.minimum = appended(store.minimum, more.minimum, dim);
}

}  // namespace

LowRankFactors::LowRankFactors(std::vector<LowRankLayer> layers) : layers_(std::move(layers)) {}

const std::vector<LowRankLayer>& LowRankFactors::on(const at::TensorOptions& options) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<LowRankLayer>& copy =
      converted_[options.device().str() + "/" + std::string(c10::toString(options.dtype().toScalarType()))];
  if (copy.empty())
    for (const LowRankLayer& layer : layers_) copy.push_back(converted(layer, options));
  return copy;
}

std::string low_rank_options_problem(const LowRankFactors& factors, const LowRankCacheOptions& options,
                                     int64_t kv_heads) {
  const int64_t bits = options.bits;
  if (bits != 2 && bits != 4 && bits != 8 && bits != 16) return "bits: expected 2, 4, 8 or 16";
  if (options.window < 0) return "window: expected >= 0";
  if (options.group < 1) return "group: expected >= 1";
  if (bits == 16) return "";
  const int64_t per_byte = 8 / bits;
  for (size_t layer = 0; layer < factors.cpu().size(); ++layer) {
    const auto index = static_cast<int64_t>(layer);
    for (const int64_t rank : {factors.key_rank(index), factors.value_rank(index)})
      if (rank % kv_heads != 0 || (rank / kv_heads) % per_byte != 0)
        return "bits: layer " + std::to_string(layer) + " has a latent rank of " + std::to_string(rank) + " over " +
               std::to_string(kv_heads) + " KV heads; " + std::to_string(bits) +
               "-bit codes need a per-head width divisible by " + std::to_string(per_byte);
  }
  return "";
}

LowRankKVCache::LowRankKVCache(std::shared_ptr<const LowRankFactors> factors, const LowRankCacheOptions& options,
                               int64_t batch, int64_t kv_heads, int64_t head_dim, const at::Tensor& inv_freq,
                               const at::TensorOptions& tensors, int64_t decode_query_heads, int64_t capacity)
    : factors_(std::move(factors)),
      options_(options),
      kv_heads_(kv_heads),
      head_dim_(head_dim),
      decode_query_heads_(decode_query_heads),
      inv_freq_(inv_freq.to(tensors.device())),
      dtype_(tensors.dtype().toScalarType()) {
  const std::string problem = low_rank_options_problem(*factors_, options_, kv_heads);
  if (!problem.empty()) throw std::invalid_argument(problem);
  device_factors_ = &factors_->on(tensors);
  layers_.resize(device_factors_->size());
  for (size_t index = 0; index < layers_.size(); ++index) {
    Layer& layer = layers_[index];
    const LowRankLayer& factor = (*device_factors_)[index];
    // Packed latents wait at most a group (plus one step's tokens) unpacked.
    const int64_t latent_capacity = options.bits == 16 ? capacity : std::min(capacity, options.group);
    layer.key_latents = at::zeros({batch, latent_capacity, factor.key_down.size(0)}, tensors);
    layer.value_latents = at::zeros({batch, latent_capacity, factor.value_down.size(0)}, tensors);
    layer.exact_keys = at::empty({batch, kv_heads, 0, head_dim}, tensors);
    layer.exact_values = at::empty({batch, kv_heads, 0, head_dim}, tensors);
    layer.positions = at::full({batch, capacity}, -1, tensors.dtype(at::kLong));
  }
}

void LowRankKVCache::attention_input(int64_t layer, const at::Tensor& hidden) {
  layers_.at(layer).pending_input = hidden;
}

std::pair<at::Tensor, at::Tensor> LowRankKVCache::rebuilt(int64_t layer_index, int64_t count) const {
  const Layer& layer = layers_.at(layer_index);
  const LowRankLayer& factor = (*device_factors_)[layer_index];
  at::Tensor key_latents = layer.key_latents.narrow(1, 0, layer.latent_tokens);
  at::Tensor value_latents = layer.value_latents.narrow(1, 0, layer.latent_tokens);
  if (layer.quantized_tokens > 0) {
    const at::Tensor stored = dequantize_keys_per_channel(layer.key_block, options_.bits, dtype_);
    key_latents = at::cat({stored.reshape({stored.size(0), layer.quantized_tokens, -1}), key_latents}, 1);
    const int64_t per_head = factor.value_down.size(0) / kv_heads_;
    value_latents = at::cat(
        {dequantize_values_per_token(layer.value_block, options_.bits, per_head, dtype_).squeeze(1), value_latents}, 1);
  }
  at::Tensor keys = lifted(key_latents.narrow(1, 0, count), factor.key_up, factor.key_bias, kv_heads_, head_dim_);
  at::Tensor values =
      lifted(value_latents.narrow(1, 0, count), factor.value_up, factor.value_bias, kv_heads_, head_dim_);
  if (factor.key_norm.defined()) keys = rms_normalized(keys, factor.key_norm, options_.key_norm_eps);
  // RoPE at each token's true position: the latent is stored before rotation.
  keys = apply_rope(keys, rope_angles(inv_freq_, layer.positions.narrow(1, 0, count), dtype_));
  return {keys, values};
}

CachedKV LowRankKVCache::update(int64_t layer_index, const at::Tensor& keys, const at::Tensor& values,
                                const at::Tensor& positions) {
  Layer& layer = layers_.at(layer_index);
  if (!layer.pending_input.defined() || layer.pending_input.size(1) != keys.size(2))
    throw std::logic_error("LowRankKVCache: update() without the step's attention_input()");
  const LowRankLayer& factor = (*device_factors_)[layer_index];
  const at::Tensor hidden = layer.pending_input.to(dtype_);
  layer.pending_input = at::Tensor();
  write_slots(layer.key_latents, layer.latent_tokens, at::matmul(hidden, factor.key_down.t()), 0);
  write_slots(layer.value_latents, layer.latent_tokens, at::matmul(hidden, factor.value_down.t()), 0);
  layer.latent_tokens += keys.size(2);
  write_slots(layer.positions, layer.tokens, positions, -1);
  layer.tokens += keys.size(2);
  layer.exact_keys = appended(layer.exact_keys, keys, 2);
  layer.exact_values = appended(layer.exact_values, values, 2);
  const int64_t total = layer.tokens, exact = layer.exact_keys.size(2);
  const at::Tensor held_positions = layer.positions.narrow(1, 0, total);
  if (exact == total) return {layer.exact_keys, layer.exact_values, held_positions};
  if (keys.size(2) == 1 && options_.bits == 16 && decode_query_heads_ > 0 && !factor.key_norm.defined()) {
    auto inputs = std::make_shared<kernels::LowRankDecodeInputs>();
    inputs->key_latents = layer.key_latents;
    inputs->value_latents = layer.value_latents;
    inputs->key_up = factor.key_up;
    inputs->value_up = factor.value_up;
    inputs->key_bias = factor.key_bias;
    inputs->value_bias = factor.value_bias;
    inputs->latent_positions = layer.positions;
    inputs->latent_tokens = total - exact;
    inputs->exact_keys = layer.exact_keys;
    inputs->exact_values = layer.exact_values;
    inputs->exact_positions = held_positions.narrow(1, total - exact, exact).contiguous();
    inputs->inv_freq = inv_freq_;
    if (kernels::low_rank_decode_supported(*inputs, decode_query_heads_)) {
      CachedKV kv;
      kv.keys = layer.exact_keys;
      kv.values = layer.exact_values;
      kv.positions = inputs->exact_positions;
      kv.low_rank = std::move(inputs);
      ++kernel_steps_;
      return kv;
    }
  }
  auto [old_keys, old_values] = rebuilt(layer_index, total - exact);
  return {at::cat({old_keys, layer.exact_keys}, 2), at::cat({old_values, layer.exact_values}, 2), held_positions};
}

void LowRankKVCache::after_attention(int64_t layer_index, const at::Tensor&, const at::Tensor&) {
  Layer& layer = layers_.at(layer_index);
  const int64_t exact = layer.exact_keys.size(2);
  if (exact > options_.window) {
    // clone: a narrowed view would keep the dropped tokens' exact storage alive
    layer.exact_keys = layer.exact_keys.narrow(2, exact - options_.window, options_.window).clone();
    layer.exact_values = layer.exact_values.narrow(2, exact - options_.window, options_.window).clone();
  }
  if (options_.bits == 16) return;
  const int64_t group = options_.group, bits = options_.bits;
  const int64_t per_head = layer.value_latents.size(2) / kv_heads_;
  // Latents are packed in whole key groups (the keys of a group share per-channel scales), all at once.
  const int64_t whole = layer.latent_tokens / group * group;
  if (whole == 0) return;
  const at::Tensor key_latents = layer.key_latents.narrow(1, 0, whole);
  // [batch, groups, group, rank]: every latent channel of a group of tokens has its own scale
  const QuantizedBlock keys = quantize_keys_per_channel(
      key_latents.reshape({key_latents.size(0), whole / group, group, key_latents.size(2)}), bits);
  const QuantizedBlock values =
      quantize_values_per_token(layer.value_latents.narrow(1, 0, whole).unsqueeze(1), bits, per_head);
  append_block(layer.key_block, keys, 1);
  append_block(layer.value_block, values, 2);
  layer.quantized_tokens += whole;
  // The rest (under a group) moves to the front of buffers sized for a group, so a long prefill's buffers go.
  const int64_t left = layer.latent_tokens - whole;
  for (at::Tensor* buffer : {&layer.key_latents, &layer.value_latents}) {
    at::Tensor small = at::zeros({buffer->size(0), group, buffer->size(2)}, buffer->options());
    small.narrow(1, 0, left).copy_(buffer->narrow(1, whole, left));
    *buffer = small;
  }
  layer.latent_tokens = left;
}

int64_t LowRankKVCache::bytes() const {
  auto block_bytes = [](const QuantizedBlock& block) {
    return block.codes.defined() ? block.codes.nbytes() + block.scale.nbytes() + block.minimum.nbytes() : 0;
  };
  int64_t total = 0;
  for (const Layer& layer : layers_) {
    total += block_bytes(layer.key_block) + block_bytes(layer.value_block) + layer.key_latents.nbytes() +
             layer.value_latents.nbytes() + layer.exact_keys.nbytes() + layer.exact_values.nbytes();
  }
  return total;
}

}  // namespace kvforge
