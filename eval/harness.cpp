#include "eval/harness.h"

#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>
#include <utility>

#include "eval/cell_runner.h"
#include "eval/tasks/documents.h"
#include "eval/tasks/tokenized_samples.h"
#include "runtime/generate.h"
#include "runtime/input_error.h"
#include "runtime/parallel/distributed.h"

#ifdef KVFORGE_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace kvforge::eval {
namespace {

constexpr int64_t kDepthBuckets = 4;  // depths pooled to 0, 25, 50, 75, 100% so each heatmap cell has samples

const Tokenizer& tokenizer_of(const LoadedModel& model) {
  if (!model.tokenizer) fail_input(model.dir, "tokenizer.json", "missing; eval needs the model's tokenizer");
  return *model.tokenizer;
}

void reset_peak_memory(const at::Device& device) {
#ifdef KVFORGE_HAVE_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#else
  (void)device;
#endif
}

int64_t peak_memory(const at::Device& device) {
#ifdef KVFORGE_HAVE_CUDA
  if (device.is_cuda())
    return c10::cuda::CUDACachingAllocator::getDeviceStats(device.index())
        .allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
        .peak;
#else
  (void)device;
#endif
  return -1;
}

std::vector<int64_t> document_tokens(const LoadedModel& model, const std::string& text) {
  std::vector<int64_t> tokens = tokenizer_of(model).encode(text, true);
  if (static_cast<int64_t>(tokens.size()) > model.config.max_position_embeddings)
    tokens.resize(model.config.max_position_embeddings);
  return tokens;
}

// Summed NLL of `target` read teacher-forced after `prompt` went through the policy's cache in one prefill.
double answer_nll(Transformer& model, const std::vector<int64_t>& prompt, const std::vector<int64_t>& target,
                  const PolicySpec* policy) {
  torch::NoGradGuard no_grad;
  if (target.empty()) return 0;
  const auto prompt_tokens = static_cast<int64_t>(prompt.size()), target_tokens = static_cast<int64_t>(target.size());
  const at::Device device = model->output_weight().device();
  CellRunner runner = cell_runner(model, policy, prompt_tokens);
  AttachedLinearization attached(runner);
  const int64_t capacity = prompt_tokens + target_tokens;
  std::unique_ptr<KVCache> cache =
      runner.cache ? runner.cache(1, capacity) : make_full_cache(runner.model, 1, capacity);
  auto ids = [&](const std::vector<int64_t>& tokens) { return at::tensor(tokens, at::kLong).unsqueeze(0).to(device); };
  const at::Tensor prompt_positions = at::arange(prompt_tokens, at::kLong).unsqueeze(0).to(device);
  at::Tensor first = runner.prefill ? runner.prefill(ids(prompt), prompt_positions, *cache)
                                    : runner.model->forward(ids(prompt), prompt_positions, cache.get(),
                                                            /*last_only=*/true);
  at::Tensor rest = runner.model->forward(
      ids(target), at::arange(prompt_tokens, capacity, at::kLong).unsqueeze(0).to(device), cache.get());
  // Row i predicts target[i]: the prompt's last logits, then the target's own but its last.
  at::Tensor logits = at::cat({first[0], rest[0].narrow(0, 0, target_tokens - 1)}, 0).to(at::kFloat);
  return at::cross_entropy_loss(logits, ids(target)[0], {}, at::Reduction::Sum).item<double>();
}

// Each vector replaced by its element-wise sum over ranks, in one collective.
void sum_over_ranks(const std::vector<std::vector<double>*>& parts, DataParallel& parallel) {
  std::vector<double> packed;
  for (const std::vector<double>* part : parts) packed.insert(packed.end(), part->begin(), part->end());
  packed = parallel.all_reduce_sum(std::move(packed));
  auto next = packed.begin();
  for (std::vector<double>* part : parts) {
    std::copy(next, next + static_cast<std::ptrdiff_t>(part->size()), part->begin());
    next += static_cast<std::ptrdiff_t>(part->size());
  }
}

}  // namespace

void validate(const EvalOptions& options, const LoadedModel& model) {
  const Tokenizer& tokenizer = tokenizer_of(model);
  if (options.samples < 1) fail_input("command line", "--samples", "expected >= 1");
  if (options.batch_size < 1) fail_input("command line", "--batch-size", "expected >= 1");
  if (options.tasks.empty() && options.perplexity_files.empty())
    fail_input("command line", "--tasks", "expected at least one task (or a --perplexity file)");
  if (!options.tasks.empty() && options.lengths.empty())
    fail_input("command line", "--lengths", "expected at least one length");
  for (const std::string& task : options.tasks) {
    if (std::find(tasks::task_names().begin(), tasks::task_names().end(), task) == tasks::task_names().end()) {
      std::string names;
      for (const std::string& name : tasks::task_names()) names += (names.empty() ? "" : ", ") + name;
      fail_input("command line", "--tasks", "unknown task '" + task + "'; expected one of " + names);
    }
  }
  for (int64_t length : options.lengths) {
    if (length < 1) fail_input("command line", "--lengths", "expected positive lengths, got " + std::to_string(length));
    // Room for the answer: the longest target among the tasks is well under 128 tokens of any tokenizer.
    if (!options.beyond_context && length + 128 > usable_positions(model.config))
      fail_input("command line", "--lengths",
                 std::to_string(length) + " tokens plus room for the answer (128) exceeds the model's context of " +
                     usable_positions_text(model.config) + "; beyond_context=true measures speed and memory there");
    for (const std::string& task : options.tasks) {
      try {
        tasks::draw_samples(tokenizer, task, length, 1, options.seed, options.arithmetic_steps);
      } catch (const std::invalid_argument& error) {
        fail_input("command line", "--lengths", task + " at " + std::to_string(length) + " tokens: " + error.what());
      }
    }
  }
  for (const std::string& path : options.perplexity_files)
    for (const std::string& document : tasks::read_documents(path))
      if (document_tokens(model, document).size() < 2) fail_input(path, "document", "encodes to fewer than 2 tokens");
}

EncodedSamples encode_samples(const Tokenizer& tokenizer, std::vector<tasks::Sample> samples) {
  EncodedSamples encoded;
  for (const tasks::Sample& sample : samples) {
    encoded.prompts.push_back(tokenizer.encode(sample.prompt, true));
    encoded.targets.push_back(tokenizer.encode(sample.target, false));
  }
  encoded.samples = std::move(samples);
  return encoded;
}

CellResult evaluate_cell(Transformer& model, const Tokenizer& tokenizer, const std::vector<int64_t>& eos_token_ids,
                         const EncodedSamples& encoded, const PolicySpec* policy, int64_t batch_size,
                         bool answer_perplexity, DataParallel* parallel) {
  const std::vector<tasks::Sample>& samples = encoded.samples;
  const at::Device device = model->output_weight().device();
  const auto count = static_cast<int64_t>(samples.size());
  const int64_t batches = (count + batch_size - 1) / batch_size;
  CellResult cell;
  cell.policy = policy != nullptr ? policy->label : "full";
  cell.samples = count;
  // Per sample and per batch, zero where another rank ran it: summed over ranks, one process's numbers.
  std::vector<double> scores(count, 0.0), nll(count, 0.0);
  std::vector<double> ttft(batches, 0.0), decode_seconds(batches, 0.0), decode_tokens(batches, 0.0),
      bytes_per_sequence(batches, 0.0);
  reset_peak_memory(device);
  for (const int64_t batch : owned_items(batches, parallel)) {
    const int64_t first = batch * batch_size, last = std::min(count, first + batch_size);
    const std::vector<std::vector<int64_t>> prompts(encoded.prompts.begin() + first, encoded.prompts.begin() + last);
    int64_t longest_prompt = 0, longest_answer = 0;
    for (int64_t i = first; i < last; ++i) {
      longest_prompt = std::max<int64_t>(longest_prompt, encoded.prompts[i].size());
      longest_answer = std::max<int64_t>(longest_answer, encoded.targets[i].size());
    }
    GenerationOptions generation;
    generation.max_new_tokens = longest_answer + 8;  // room to stop; greedy, so no seed is involved
    generation.eos_token_ids = eos_token_ids;
    CellRunner runner = cell_runner(model, policy, longest_prompt);
    AttachedLinearization attached(runner);
    GenerationResult result = generate(runner.model, prompts, generation, &tokenizer, runner.cache, runner.prefill);
    for (int64_t i = first; i < last; ++i)
      scores[i] = tasks::score(samples[i], tokenizer.decode(result.sequences[i - first].tokens, true));
    ttft[batch] = result.prefill_seconds;
    decode_seconds[batch] = result.decode_seconds;
    decode_tokens[batch] = static_cast<double>(result.decode_tokens);
    bytes_per_sequence[batch] = static_cast<double>(result.peak_cache_bytes) / static_cast<double>(last - first);
  }
  if (answer_perplexity)
    for (const int64_t batch : owned_items(batches, parallel))
      for (int64_t i = batch * batch_size; i < std::min(count, (batch + 1) * batch_size); ++i)
        nll[i] = answer_nll(model, encoded.prompts[i], encoded.targets[i], policy);
  cell.peak_device_bytes = peak_memory(device);
  if (parallel != nullptr) {
    sum_over_ranks({&scores, &nll, &ttft, &decode_seconds, &decode_tokens, &bytes_per_sequence}, *parallel);
    cell.peak_device_bytes = static_cast<int64_t>(
        parallel->all_reduce_max({static_cast<double>(cell.peak_device_bytes)})[0]);  // the largest rank's
  }

  std::map<double, std::pair<int64_t, double>> depths;  // bucket -> (samples, score sum)
  for (int64_t i = 0; i < count; ++i) {
    if (samples[i].depth < 0) continue;
    auto& bucket = depths[std::round(samples[i].depth * kDepthBuckets) / kDepthBuckets];
    bucket.first += 1;
    bucket.second += scores[i];
  }
  for (const auto& [depth, bucket] : depths)
    cell.by_depth.push_back({depth, bucket.first, bucket.second / static_cast<double>(bucket.first)});
  auto total = [](const std::vector<double>& values) { return std::accumulate(values.begin(), values.end(), 0.0); };
  cell.accuracy = total(scores) / static_cast<double>(count);
  cell.kv_bytes = total(bytes_per_sequence) / static_cast<double>(batches);
  cell.ttft_ms = 1e3 * total(ttft) / static_cast<double>(batches);
  cell.decode_tokens_per_s = total(decode_seconds) > 0 ? total(decode_tokens) / total(decode_seconds) : 0;
  if (answer_perplexity) {
    for (const std::vector<int64_t>& target : encoded.targets)
      cell.answer_tokens += static_cast<int64_t>(target.size());
    cell.answer_perplexity = std::exp(total(nll) / static_cast<double>(std::max<int64_t>(cell.answer_tokens, 1)));
  }
  return cell;
}

DocumentNll document_nll(Transformer& model, const std::vector<int64_t>& tokens, const PolicySpec* policy,
                         int64_t chunk) {
  torch::NoGradGuard no_grad;
  const int64_t count = static_cast<int64_t>(tokens.size());
  const at::Device device = model->output_weight().device();
  CellRunner runner = cell_runner(model, policy, count);
  AttachedLinearization attached(runner);
  if (runner.prefill)
    throw std::invalid_argument("document_nll: " + policy->label +
                                " changes only how a prompt is prefilled; measure it by answer perplexity");
  std::unique_ptr<KVCache> cache = runner.cache ? runner.cache(1, count) : make_full_cache(runner.model, 1, count);
  at::Tensor ids = at::tensor(tokens, at::kLong).unsqueeze(0);  // [1, tokens]
  DocumentNll result;
  for (int64_t start = 0; start + 1 < count; start += chunk) {
    const int64_t width = std::min(chunk, count - start);
    at::Tensor logits =
        runner.model->forward(ids.narrow(1, start, width).to(device),
                              at::arange(start, start + width, at::kLong).unsqueeze(0).to(device), cache.get());
    const int64_t predicted = std::min(width, count - 1 - start);  // the last token has no successor
    at::Tensor targets = ids.narrow(1, start + 1, predicted).reshape({-1}).to(device);
    at::Tensor step_logits = logits.narrow(1, 0, predicted).reshape({predicted, -1}).to(at::kFloat);
    result.total_nll += at::cross_entropy_loss(step_logits, targets, {}, at::Reduction::Sum).item<double>();
    result.predicted += predicted;
    result.peak_cache_bytes = std::max(result.peak_cache_bytes, cache->bytes());
  }
  return result;
}

EvalReport run_eval(LoadedModel& model, const EvalOptions& options, const EvalProgress& progress,
                    DataParallel* parallel) {
  const auto start = std::chrono::steady_clock::now();
  const Tokenizer& tokenizer = tokenizer_of(model);
  EvalReport report;
  report.model = model.dir;
  const at::Tensor& weight = model.model->output_weight();
  report.device = weight.device().str();
#ifdef KVFORGE_HAVE_CUDA
  if (weight.is_cuda())
    report.device += std::string(" (") + at::cuda::getDeviceProperties(weight.device().index())->name + ")";
#endif
  if (parallel != nullptr && parallel->world_size() > 1)
    report.device += " × " + std::to_string(parallel->world_size()) + " ranks";
  const at::ScalarType dtype = weight.scalar_type();
  report.dtype = dtype == at::kBFloat16 ? "bfloat16" : dtype == at::kHalf ? "float16" : "float32";
  report.seed = options.seed;
  report.batch_size = options.batch_size;
  report.tasks = options.tasks;
  report.lengths = options.lengths;
  // The full cache first: every other policy's KV ratio is measured against it on the same prompts.
  std::vector<const PolicySpec*> policies{nullptr};
  report.policies.push_back("full");
  for (const PolicySpec& policy : options.policies) {
    if (policy.name == "full" ||
        std::find(report.policies.begin(), report.policies.end(), policy.label) != report.policies.end())
      continue;
    policies.push_back(&policy);
    report.policies.push_back(policy.label);
  }

  // One untimed batch per policy so no cell's time to first token includes warm-up (a policy may bring a model of its
  // own: KV Prediction's auxiliary). On CUDA it is a whole batch at the longest length, so the caching allocator
  // already holds blocks of every size a cell asks for: a first batch that waits on cudaMalloc swung TTFT 5x between
  // cells.
  if (!options.tasks.empty()) {
    const bool cuda = weight.is_cuda();
    const int64_t length =
        cuda ? *std::max_element(options.lengths.begin(), options.lengths.end()) : options.lengths[0];
    const int64_t count = cuda ? options.batch_size : 1;
    const EncodedSamples warm = encode_samples(
        tokenizer,
        tasks::draw_samples(tokenizer, options.tasks[0], length, count, options.seed, options.arithmetic_steps));
    for (const PolicySpec* policy : policies)
      evaluate_cell(model.model, tokenizer, model.eos_token_ids, warm, policy, count);
  }
  const int64_t total_cells = static_cast<int64_t>(options.tasks.size() * options.lengths.size() * policies.size());
  int64_t done = 0;
  for (const std::string& task : options.tasks) {
    for (int64_t length : options.lengths) {
      const EncodedSamples samples = encode_samples(
          tokenizer,
          tasks::draw_samples(tokenizer, task, length, options.samples, options.seed, options.arithmetic_steps));
      double full_bytes = 0;
      for (const PolicySpec* policy : policies) {
        CellResult cell = evaluate_cell(model.model, tokenizer, model.eos_token_ids, samples, policy,
                                        options.batch_size, options.answer_perplexity, parallel);
        cell.task = task;
        cell.length = length;
        if (policy == nullptr) full_bytes = cell.kv_bytes;
        cell.full_kv_bytes = full_bytes;
        cell.kv_ratio = full_bytes > 0 ? cell.kv_bytes / full_bytes : 1.0;
        report.cells.push_back(cell);
        if (progress) progress(++done, total_cells, report.cells.back());
      }
    }
  }

  for (const std::string& path : options.perplexity_files) {
    const std::vector<std::string> documents = tasks::read_documents(path);
    double full_bytes = 0;
    for (const PolicySpec* policy : policies) {
      if (policy != nullptr && cell_runner(model.model, policy, 1).prefill) continue;  // prefill-only: see document_nll
      PerplexityResult result;
      result.policy = policy != nullptr ? policy->label : "full";
      result.file = path;
      const auto count = static_cast<int64_t>(documents.size());
      std::vector<double> nll(count, 0.0), predicted(count, 0.0), held(count, 0.0);  // per document
      for (const int64_t d : owned_items(count, parallel)) {
        DocumentNll part =
            document_nll(model.model, document_tokens(model, documents[d]), policy, options.perplexity_chunk);
        nll[d] = part.total_nll;
        predicted[d] = static_cast<double>(part.predicted);
        held[d] = static_cast<double>(part.peak_cache_bytes);
      }
      if (parallel != nullptr) sum_over_ranks({&nll, &predicted, &held}, *parallel);
      const double bytes = std::accumulate(held.begin(), held.end(), 0.0);
      result.tokens = static_cast<int64_t>(std::accumulate(predicted.begin(), predicted.end(), 0.0));
      result.documents = count;
      result.perplexity = std::exp(std::accumulate(nll.begin(), nll.end(), 0.0) / static_cast<double>(result.tokens));
      if (policy == nullptr) full_bytes = bytes;
      result.kv_ratio = full_bytes > 0 ? bytes / full_bytes : 1.0;
      report.perplexity.push_back(result);
    }
  }
  report.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace kvforge::eval
