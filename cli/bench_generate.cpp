// kvforge bench generate: whole-model generation on one GPU, per policy and shape, through the same path eval runs
// (eval::cell_runner, runtime::generate): time to first token, time per output token, decode tokens/s, KV bytes as
// allocated, peak allocated and reserved device memory, and the decode step's bandwidth roofline, (weights + KV
// bytes) / the copy bandwidth measured in the same run, with the share of it reached. The model comes from a
// config.json with random weights drawn on the GPU (speed and memory do not depend on their values), or from a
// checkpoint. A cell that cannot run says why in the cell.
#include <torch/cuda.h>
#include <torch/utils.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/cuda_timing.h"
#include "eval/cell_runner.h"
#include "policies/policy.h"
#include "runtime/file_system.h"
#include "runtime/generate.h"
#include "runtime/input_error.h"
#include "runtime/model_loader.h"

#ifdef KVFORGE_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#endif

namespace kvforge {
namespace {

struct GenerateBenchArgs {
  std::string config;  // config.json: random weights of that shape on the GPU
  std::string model;   // or a checkpoint directory
  std::vector<std::string> policies{"full"};
  std::vector<int64_t> batches{1, 4, 16};
  std::vector<int64_t> lengths{8192, 32768};
  int64_t new_tokens = 32;
  std::vector<int64_t> cuda_graph{0};  // decode modes per cell: 1 = steps replayed from a CUDA graph, 0 = eager
  uint64_t seed = 0;
  std::string out;  // JSON report; empty = the table only
  std::string command_line;
};

#ifdef KVFORGE_HAVE_CUDA

// N(0, 0.02) matrices and unit norms, drawn on the device: an 8B model's weights in well under a second, where the
// seeded CPU draw that pretraining uses takes minutes. The values only need to be finite and not degenerate.
void fill_random_weights(Transformer& model, uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::manual_seed(seed);
  for (auto& item : model->named_parameters()) {
    at::Tensor& parameter = item.value();
    if (item.key().find("norm.weight") != std::string::npos)
      parameter.fill_(1.0);
    else
      parameter.normal_(0.0, 0.02);
  }
}

int64_t parameter_bytes(const Transformer& model) {
  int64_t total = 0;
  for (const auto& parameter : model->parameters()) total += parameter.nbytes();
  return total;
}

struct MemoryPeaks {
  int64_t allocated = 0, reserved = 0;
};

MemoryPeaks memory_peaks(int device) {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
  const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  return {stats.allocated_bytes[aggregate].peak, stats.reserved_bytes[aggregate].peak};
}

// Device-to-device copy bandwidth, read + write bytes per second, over a buffer much larger than the L2.
double copy_bytes_per_second() {
  const at::Tensor source = at::empty({int64_t{1} << 30}, at::TensorOptions().device(at::kCUDA).dtype(at::kByte));
  source.fill_(1);
  at::Tensor target = at::empty_like(source);
  const double ms = median_ms([&] { target.copy_(source); }, 10);
  return 2.0 * static_cast<double>(source.nbytes()) / (ms * 1e-3);
}

std::vector<std::vector<int64_t>> random_prompts(int64_t batch, int64_t length, int64_t vocab, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::uniform_int_distribution<int64_t> token(0, vocab - 1);
  std::vector<std::vector<int64_t>> prompts(batch, std::vector<int64_t>(length));
  for (auto& prompt : prompts)
    for (int64_t& id : prompt) id = token(generator);
  return prompts;
}

std::string device_description(nlohmann::json& device) {
  const int index = at::cuda::current_device();
  const cudaDeviceProp* properties = at::cuda::getDeviceProperties(index);
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  device = {{"name", properties->name},
            {"memory_bytes", properties->totalGlobalMem},
            {"multiprocessors", properties->multiProcessorCount},
            {"cuda_driver_api", driver},
            {"cuda_runtime", runtime}};
  return std::string(properties->name) + ", " + std::to_string(properties->totalGlobalMem >> 20) +
         " MiB, CUDA driver API " + std::to_string(driver);
}

void run_generate_bench(const GenerateBenchArgs& args) {
  if (!torch::cuda::is_available()) fail_input("command line", "bench generate", "needs a CUDA device");
  if (!args.out.empty()) check_output_file(args.out, "command line", "--out");
  std::vector<PolicySpec> policies;
  for (const std::string& text : args.policies) policies.push_back(parse_policy(text));
  const at::Device device(at::kCUDA, at::cuda::current_device());
  Transformer model{nullptr};
  std::string weights;
  if (!args.model.empty()) {
    model = load_model(args.model, device, at::kBFloat16).model;
    weights = "checkpoint " + args.model;
  } else {
    const ModelConfig config = ModelConfig::from_file(args.config);
    model = Transformer(config, at::TensorOptions().device(device).dtype(at::kBFloat16));
    fill_random_weights(model, args.seed);
    weights = "random N(0, 0.02) of " + args.config;
  }
  model->eval();
  const ModelConfig& config = model->config;
  for (int64_t length : args.lengths)
    if (length + args.new_tokens > usable_positions(config))
      fail_input("command line", "--lengths",
                 std::to_string(length) + " + --new-tokens " + std::to_string(args.new_tokens) + " within " +
                     usable_positions_text(config));

  nlohmann::json report;
  const std::string card = device_description(report["device"]);
  const double copy_bps = copy_bytes_per_second();
  const int64_t weight_bytes = parameter_bytes(model);
  report["command"] = args.command_line;
  report["weights"] = weights;
  report["weight_bytes"] = weight_bytes;
  report["copy_bytes_per_second"] = copy_bps;
  report["new_tokens"] = args.new_tokens;
  report["note"] =
      "ttft_ms: prompt in, first token chosen (prefill); tpot_ms: each later step (with a CUDA graph, the first of "
      "them also captures it); graph_decode: the steps replayed a captured graph; kv_bytes: the cache's allocations "
      "at their largest; peaks: the caching allocator's over the cell, weights included; roofline_ms: (weight_bytes + "
      "kv_bytes) / copy_bytes_per_second, the least a decode step that reads both once can take";
  report["cells"] = nlohmann::json::array();
  std::printf("%s; copy %.0f GB/s; weights %.0f MiB (%s)\n", card.c_str(), copy_bps / 1e9, weight_bytes / 1048576.0,
              weights.c_str());
  std::printf("%-28s %5s %7s %5s | %9s %8s %9s | %9s %10s %10s | %9s %6s\n", "policy", "batch", "tokens", "graph",
              "TTFT ms", "TPOT ms", "tok/s", "KV MiB", "peak MiB", "rsrv MiB", "roof ms", "roof%");

  for (const PolicySpec& policy : policies) {
    {  // Warm-up (kernels, cuBLAS handles, the allocator's first blocks) outside the timed cells.
      eval::CellRunner warm = eval::cell_runner(model, &policy, 256);
      eval::AttachedLinearization attached(warm);
      GenerationOptions options;
      options.max_new_tokens = 4;
      generate(warm.model, random_prompts(1, 256, config.vocab_size, args.seed), options, nullptr, warm.cache,
               warm.prefill);
    }
    for (int64_t length : args.lengths) {
      for (int64_t batch : args.batches)
        for (int64_t graph : args.cuda_graph) {
          nlohmann::json cell = {
              {"policy", policy.label}, {"batch", batch}, {"prompt_tokens", length}, {"cuda_graph", graph != 0}};
          c10::cuda::CUDACachingAllocator::emptyCache();
          c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
          try {
            eval::CellRunner runner = eval::cell_runner(model, &policy, length);
            eval::AttachedLinearization attached(runner);
            GenerationOptions options;
            options.max_new_tokens = args.new_tokens;
            options.cuda_graph = graph != 0;
            const GenerationResult result =
                generate(runner.model, random_prompts(batch, length, config.vocab_size, args.seed + length + batch),
                         options, nullptr, runner.cache, runner.prefill);
            const MemoryPeaks peaks = memory_peaks(device.index());
            const double steps = static_cast<double>(args.new_tokens - 1);
            const double tpot_ms = steps > 0 ? result.decode_seconds * 1e3 / steps : 0.0;
            const double roofline_ms = static_cast<double>(weight_bytes + result.peak_cache_bytes) / copy_bps * 1e3;
            cell["graph_decode"] = result.graph_decode;  // false where the layout decodes eagerly
            cell["ttft_ms"] = result.prefill_seconds * 1e3;
            cell["tpot_ms"] = tpot_ms;
            cell["decode_tokens_per_s"] =
                result.decode_seconds > 0 ? result.decode_tokens / result.decode_seconds : 0.0;
            cell["kv_bytes"] = result.peak_cache_bytes;
            cell["peak_allocated_bytes"] = peaks.allocated;
            cell["peak_reserved_bytes"] = peaks.reserved;
            cell["roofline_ms"] = roofline_ms;
            cell["roofline_fraction"] = tpot_ms > 0 ? roofline_ms / tpot_ms : 0.0;
            std::printf("%-28s %5lld %7lld %5s | %9.1f %8.2f %9.1f | %9.0f %10.0f %10.0f | %9.2f %5.1f%%\n",
                        policy.label.c_str(), static_cast<long long>(batch), static_cast<long long>(length),
                        result.graph_decode ? "yes" : "no", result.prefill_seconds * 1e3, tpot_ms,
                        cell["decode_tokens_per_s"].get<double>(), result.peak_cache_bytes / 1048576.0,
                        peaks.allocated / 1048576.0, peaks.reserved / 1048576.0, roofline_ms,
                        100.0 * cell["roofline_fraction"].get<double>());
          } catch (const c10::OutOfMemoryError& error) {
            std::string what = error.what_without_backtrace();
            what = what.substr(0, what.find('\n'));
            cell["error"] = "out of memory: " + what;
            std::printf("%-28s %5lld %7lld %5s | out of memory\n", policy.label.c_str(), static_cast<long long>(batch),
                        static_cast<long long>(length), graph != 0 ? "asked" : "no");
          }
          std::fflush(stdout);
          report["cells"].push_back(cell);
          if (!args.out.empty())
            write_text_atomically(args.out, report.dump(1) + "\n");  // a killed run keeps its cells
        }
    }
  }
  if (!args.out.empty()) std::printf("report: %s\n", args.out.c_str());
}

#else
void run_generate_bench(const GenerateBenchArgs&) {
  fail_input("command line", "bench generate", "this build has no CUDA");
}
#endif

}  // namespace

void add_generate_bench(CLI::App& bench) {
  auto args = std::make_shared<GenerateBenchArgs>();
  CLI::App* command = bench.add_subcommand(
      "generate", "Whole-model generation per policy and shape: TTFT, TPOT, tokens/s, KV and peak memory, roofline");
  auto* config = command->add_option("--config", args->config, "config.json: random bf16 weights of its shape");
  auto* model = command->add_option("--model", args->model, "a checkpoint directory instead (its weights, bf16)");
  config->excludes(model);
  command->add_option("--policy", args->policies, "policy spec, repeatable (default full)");
  command->add_option("--batch", args->batches, "batch sizes")->delimiter(',');
  command->add_option("--lengths", args->lengths, "prompt tokens per sequence")->delimiter(',');
  command->add_option("--new-tokens", args->new_tokens, "tokens generated per sequence (the first is the TTFT's)");
  command
      ->add_option("--cuda-graph", args->cuda_graph,
                   "decode modes to run each cell in: 1 = steps replayed from a CUDA graph where the layout allows, "
                   "0 = eager steps (the default; 0,1 for both)")
      ->delimiter(',');
  command->add_option("--seed", args->seed, "seed of the random weights and prompts");
  command->add_option("--out", args->out, "JSON report (written after every cell)");
  command->callback([args, command] {
    if (args->config.empty() && args->model.empty())
      fail_input("command line", "--config", "a config.json (random weights) or --model DIR");
    if (args->new_tokens < 2) fail_input("command line", "--new-tokens", "at least 2 (one prefill token, one step)");
    for (int64_t batch : args->batches)
      if (batch < 1) fail_input("command line", "--batch", "sizes >= 1, got " + std::to_string(batch));
    for (int64_t length : args->lengths)
      if (length < 1) fail_input("command line", "--lengths", "lengths >= 1, got " + std::to_string(length));
    for (int64_t graph : args->cuda_graph)
      if (graph != 0 && graph != 1) fail_input("command line", "--cuda-graph", "0 or 1, got " + std::to_string(graph));
    std::ostringstream line;
    line << "kvforge bench generate";
    for (const CLI::Option* option : command->get_options())
      if (option->count() > 0 && option->get_name() != "--help")
        for (const std::string& value : option->results()) line << ' ' << option->get_name() << ' ' << value;
    args->command_line = line.str();
    run_generate_bench(*args);
  });
}

}  // namespace kvforge
