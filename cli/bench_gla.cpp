// kvforge bench gla: the chunked gated linear attention Lizard trains with (scalar per-head gates), forward and
// forward + backward in bf16, and the whole hybrid layer (window + linear branch) on the same shapes. The timings are
// what bench/fla_gla.py measures for flash-linear-attention's chunk_simple_gla and chunk_gla, printed in the same
// format so scripts/device_lizard.sh can set them side by side in one run. Then one decode step of the hybrid layer:
// the fused kernel against the same step in tensor ops.
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/cuda_timing.h"
#include "runtime/hybrid_attention.h"
#include "runtime/input_error.h"

namespace kvforge {
namespace {

struct GlaBenchArgs {
  std::vector<int64_t> batches{4};
  std::vector<int64_t> lengths{2048, 8192};
  int64_t heads = 32, features = 128, value_dim = 128, chunk = 64, window = 64, iterations = 20;
};

#ifdef KVFORGE_HAVE_CUDA
void run_gla_bench(const GlaBenchArgs& args) {
  if (!torch::cuda::is_available()) fail_input("command line", "bench gla", "needs a CUDA device");
  const auto bf16 = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  std::printf("%-28s %6s %6s %8s %6s %6s | %10s %10s\n", "kernel", "batch", "heads", "tokens", "K", "V", "fwd ms",
              "fwd+bwd ms");
  for (int64_t batch : args.batches) {
    for (int64_t tokens : args.lengths) {
      at::manual_seed(0);
      // Features positive and summing to about 2 per token, as Hedgehog's two softmax halves do.
      auto features = [&] {
        return (at::rand({batch, args.heads, tokens, args.features}, bf16) * (4.0 / args.features))
            .requires_grad_(true);
      };
      const at::Tensor q = features(), k = features();
      const at::Tensor v = at::randn({batch, args.heads, tokens, args.value_dim}, bf16).requires_grad_(true);
      // Gates as a trained layer leaves them: log σ(x) with σ near 0.9-1.
      const at::Tensor g = at::log_sigmoid(at::randn({batch, args.heads, tokens}, bf16.dtype(at::kFloat)) + 4)
                               .to(at::kBFloat16)
                               .requires_grad_(true);
      const at::Tensor grad = at::randn({batch, args.heads, tokens, args.value_dim}, bf16);
      auto row = [&](const char* name, const std::function<at::Tensor()>& forward) {
        const double fwd = median_ms(
            [&] {
              torch::NoGradGuard no_grad;
              forward();
            },
            args.iterations);
        const double both = median_ms(
            [&] {
              at::Tensor out = forward();
              out.backward(grad.narrow(-1, 0, out.size(-1)).expand_as(out));
            },
            args.iterations);
        std::printf("%-28s %6lld %6lld %8lld %6lld %6lld | %10.3f %10.3f\n", name, static_cast<long long>(batch),
                    static_cast<long long>(args.heads), static_cast<long long>(tokens),
                    static_cast<long long>(args.features), static_cast<long long>(args.value_dim), fwd, both);
      };
      row("kvforge gated_linear_attn", [&] { return gated_linear_attention(q, k, v, g, args.chunk); });
      HybridInputs in;
      in.query_features = q;
      in.key_features = k;
      in.queries = q.narrow(-1, 0, args.value_dim);
      in.keys = k.narrow(-1, 0, args.value_dim);
      in.values = v;
      in.log_gates = g;
      HybridAttentionConfig config;
      config.window = args.window;
      row("kvforge hybrid (+window)", [&] { return hybrid_attention_chunked(in, config, args.chunk); });
    }
  }
  // One decode step of the whole hybrid layer (state + window), the fused kernel against the same step in tensor ops.
  std::printf("\n%-28s %6s %6s %6s %6s | %10s %10s %8s\n", "decode step", "batch", "heads", "F", "window", "fused us",
              "tensor us", "ratio");
  for (int64_t batch : {int64_t{1}, int64_t{16}}) {
    torch::NoGradGuard no_grad;
    HybridAttentionConfig config;
    config.window = args.window;
    HybridDecodeState state(config, batch, args.heads, args.features, args.value_dim, args.value_dim, bf16);
    auto token = [&](int64_t dim) { return at::rand({batch, args.heads, 1, dim}, bf16); };
    const at::Tensor qf = token(args.features), kf = token(args.features), q = token(args.value_dim),
                     k = token(args.value_dim), v = token(args.value_dim);
    const at::Tensor gate = at::full({batch, args.heads, 1}, -0.01, bf16);
    const at::Tensor sinks = at::zeros({args.heads, 4}, bf16.dtype(at::kFloat));
    for (int64_t t = 0; t < 2 * args.window; ++t) state.step(qf, kf, q, k, v, gate, sinks, {});  // past the window
    auto step = [&] { state.step(qf, kf, q, k, v, gate, sinks, {}); };
    const double fused = median_ms(step, args.iterations * 10);
    state.use_kernel = false;
    const double tensor = median_ms(step, args.iterations * 10);
    std::printf("%-28s %6lld %6lld %6lld %6lld | %10.1f %10.1f %7.1fx\n", "kvforge hybrid decode",
                static_cast<long long>(batch), static_cast<long long>(args.heads),
                static_cast<long long>(args.features), static_cast<long long>(args.window), fused * 1e3, tensor * 1e3,
                tensor / fused);
  }
}
#else
void run_gla_bench(const GlaBenchArgs&) { fail_input("command line", "bench gla", "this build has no CUDA"); }
#endif

}  // namespace

void add_gla_bench(CLI::App& bench) {
  auto args = std::make_shared<GlaBenchArgs>();
  CLI::App* gla = bench.add_subcommand("gla", "Lizard's chunked gated linear attention, forward and backward (bf16)");
  gla->add_option("--batch", args->batches, "batch sizes")->delimiter(',');
  gla->add_option("--lengths", args->lengths, "tokens per sequence")->delimiter(',');
  gla->add_option("--heads", args->heads, "heads");
  gla->add_option("--features", args->features, "feature (key) dimension");
  gla->add_option("--value-dim", args->value_dim, "value dimension");
  gla->add_option("--chunk", args->chunk, "chunk of the parallel form");
  gla->add_option("--window", args->window, "the hybrid row's softmax window");
  gla->add_option("--iterations", args->iterations, "timed bursts of 10 back-to-back runs per measurement");
  gla->callback([args] { run_gla_bench(*args); });
}

}  // namespace kvforge
