#include "runtime/generate.h"

#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "runtime/decode_graph.h"

#ifdef KVFORGE_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace kvforge {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void synchronize(const at::Device& device) {
#ifdef KVFORGE_HAVE_CUDA
  if (device.is_cuda()) at::cuda::getCurrentCUDAStream(device.index()).synchronize();
#endif
}

bool ends_with_stop(const std::string& text, const std::vector<std::string>& stops) {
  for (const std::string& stop : stops)
    if (!stop.empty() && text.find(stop) != std::string::npos) return true;
  return false;
}

}  // namespace

const char* to_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return "length";
    case FinishReason::kEos: return "eos";
    case FinishReason::kStopString: return "stop_string";
  }
  return "?";
}

std::unique_ptr<KVCache> make_full_cache(const Transformer& model, int64_t batch, int64_t capacity) {
  const ModelConfig& config = model->config;
  return std::make_unique<FullKVCache>(config.num_layers, batch, config.num_kv_heads, config.head_dim, capacity,
                                       model->output_weight().options());
}

GenerationResult generate(Transformer& model, const std::vector<std::vector<int64_t>>& prompts,
                          const GenerationOptions& options, const Tokenizer* tokenizer,
                          const CacheFactory& make_cache, const PromptPrefill& prefill) {
  if (prompts.empty()) throw std::invalid_argument("generate: no prompts");
  if (options.max_new_tokens < 1) throw std::invalid_argument("max_new_tokens: expected >= 1");
  if (!options.stop_strings.empty() && tokenizer == nullptr)
    throw std::invalid_argument("stop strings need a tokenizer (the model directory has no tokenizer.json)");
  const ModelConfig& config = model->config;
  for (const auto& prompt : prompts) {
    if (prompt.empty()) throw std::invalid_argument("generate: empty prompt");
    for (int64_t id : prompt)
      if (id < 0 || id >= config.vocab_size)
        throw std::invalid_argument("generate: token id " + std::to_string(id) + " outside the vocabulary");
  }
  torch::NoGradGuard no_grad;
  const at::Device device = model->output_weight().device();
  const int64_t batch = static_cast<int64_t>(prompts.size());
  int64_t longest = 0;
  for (const auto& prompt : prompts) longest = std::max<int64_t>(longest, prompt.size());
  const int64_t pad_id = config.pad_token_id.value_or(0);

  // Left padding aligns every sequence's next token in one column; padding gets position -1.
  at::Tensor ids = at::full({batch, longest}, pad_id, at::kLong);
  at::Tensor positions = at::full({batch, longest}, -1, at::kLong);
  auto ids_at = ids.accessor<int64_t, 2>();
  auto positions_at = positions.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const auto& prompt = prompts[b];
    const int64_t pad = longest - static_cast<int64_t>(prompt.size());
    for (size_t t = 0; t < prompt.size(); ++t) {
      ids_at[b][pad + t] = prompt[t];
      positions_at[b][pad + t] = static_cast<int64_t>(t);
    }
  }
  std::unique_ptr<KVCache> cache = make_cache ? make_cache(batch, longest + options.max_new_tokens)
                                              : make_full_cache(model, batch, longest + options.max_new_tokens);

  GenerationResult result;
  result.sequences.resize(batch);
  std::vector<int64_t> next_position(batch);
  for (int64_t b = 0; b < batch; ++b) next_position[b] = static_cast<int64_t>(prompts[b].size());
  std::vector<bool> done(batch, false);
  Sampler sampler(options.sampling);
  std::unique_ptr<FixedShapeDecode> fixed_shape;

  auto start = std::chrono::steady_clock::now();
  // Prompts of one length have no padding: every row's positions are 0, 1, ..., so the prompt attends under a plain
  // causal mask, which CUDA runs in the fused flash kernel instead of the masked one (the model checks that the cache
  // handed back exactly the prompt's slots before it relies on that).
  const bool unpadded = std::all_of(prompts.begin(), prompts.end(),
                                    [&](const auto& prompt) { return static_cast<int64_t>(prompt.size()) == longest; });
  at::Tensor logits = prefill ? prefill(ids.to(device), positions.to(device), *cache)
                              : model->forward(ids.to(device), positions.to(device), cache.get(), /*last_only=*/true,
                                               /*causal_prefix=*/unpadded);
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    // Greedy decoding picks on the device and copies one id per sequence; sampling copies the logits to the host
    // sampler (the same seed gives the same tokens on any device). Both take the first maximum.
    const bool greedy = options.sampling.temperature == 0.0;
    at::Tensor host_logits, host_choice;
    if (greedy)
      host_choice = logits.select(1, 0).argmax(-1).to(at::kCPU);  // [batch]
    else
      host_logits = logits.select(1, 0).to(at::kCPU, at::kFloat);  // [batch, vocab]
    at::Tensor next_ids = at::full({batch, 1}, pad_id, at::kLong);
    at::Tensor next_positions = at::full({batch, 1}, -1, at::kLong);
    auto next_ids_at = next_ids.accessor<int64_t, 2>();
    auto next_positions_at = next_positions.accessor<int64_t, 2>();
    for (int64_t b = 0; b < batch; ++b) {
      if (done[b]) continue;
      GeneratedSequence& sequence = result.sequences[b];
      const int64_t token = greedy ? host_choice.data_ptr<int64_t>()[b] : sampler.next(host_logits[b]);
      sequence.tokens.push_back(token);
      next_ids_at[b][0] = token;
      next_positions_at[b][0] = next_position[b]++;
      if (std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), token) != options.eos_token_ids.end()) {
        sequence.finish = FinishReason::kEos;
        done[b] = true;
      } else if (!options.stop_strings.empty() && ends_with_stop(tokenizer->decode(sequence.tokens), options.stop_strings)) {
        sequence.finish = FinishReason::kStopString;
        done[b] = true;
      }
      if (step > 0) ++result.decode_tokens;
    }
    if (step == 0) {
      synchronize(device);
      result.prefill_seconds = seconds_since(start);
      start = std::chrono::steady_clock::now();
    }
    result.peak_cache_bytes = std::max(result.peak_cache_bytes, cache->bytes());
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; }) || step + 1 == options.max_new_tokens) break;
    // After the prompt is in, the cache readies its buffers for the steps still to come, if its layout can.
    if (step == 0 && (options.fixed_shape_decode || options.cuda_graph))
      fixed_shape = FixedShapeDecode::create(model, *cache, batch, options.max_new_tokens - 1, options.cuda_graph);
    // Finished sequences keep stepping with a padding token at position -1 (masked everywhere).
    logits = fixed_shape ? fixed_shape->step(next_ids, next_positions)
                         : model->forward(next_ids.to(device), next_positions.to(device), cache.get(),
                                          /*last_only=*/true);
  }
  result.graph_decode = fixed_shape && fixed_shape->captured();
  synchronize(device);
  result.decode_seconds = seconds_since(start);
  return result;
}

}  // namespace kvforge
