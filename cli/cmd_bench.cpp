// kvforge bench decode: decode attention on one GPU, this project's kernel against PyTorch SDPA and the
// runtime's masked torch path on the same inputs, as achieved GB/s of K/V read and as a share of the copy
// bandwidth measured in the same run; then CSKV's low-rank kernel against the full cache's on the same shapes.
#include <torch/cuda.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/cuda_timing.h"
#include "kernels/bindings.h"
#include "runtime/input_error.h"
#include "runtime/quantized_kv_cache.h"
#include "runtime/rope.h"
#include "runtime/transformer.h"

#ifdef KVFORGE_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#endif
#ifdef KVFORGE_HAVE_FLASHINFER
#include "bench/flashinfer_decode.h"
#endif

namespace kvforge {
namespace {

struct BenchArgs {
  std::vector<int64_t> batches{1, 8};
  std::vector<int64_t> lengths{4096, 16384, 32768};
  int64_t heads = 32;
  int64_t kv_heads = 8;
  int64_t head_dim = 128;
  int64_t iterations = 50;
  std::vector<int64_t> splits{0};        // 0 = the kernel's own choice
  std::vector<int64_t> ranks{256};       // CSKV latent ranks (K = V) for the low-rank rows; empty = none
  int64_t exact_window = 32;             // CSKV's exact recent tokens beside the latents
  std::vector<int64_t> kivi_bits{4, 2};  // KIVI rows; empty = none
  int64_t streaming_heads = 4;           // mixed-head rows: KV heads that keep a sink + recent ring; 0 = none
  std::vector<int64_t> streaming_window{64, 1024};  // the ring's sink and recent slots
};

#ifdef KVFORGE_HAVE_CUDA

// CSKV's bi-branch layout on the same shapes: the low-rank kernel (keys rebuilt in shared memory, values attended in
// the latent space) against the full-cache kernel and against the reference's way, which rebuilds every old key
// and value into memory (matmuls + RoPE) and then attends them.
void run_low_rank_rows(const BenchArgs& args) {
  const auto bf16 = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  const int64_t width = args.kv_heads * args.head_dim;
  std::printf(
      "\nCSKV low-rank layout (latents of K and V at rank r, %lld exact tokens): kernel vs the full cache's "
      "kernel vs rebuilding K/V in memory\n",
      static_cast<long long>(args.exact_window));
  std::printf("%6s %8s %5s %10s | %10s %10s %10s | %9s %11s\n", "batch", "tokens", "rank", "KV MiB", "ours us",
              "full us", "rebuild us", "full/ours", "rebuild/ours");
  const at::Tensor inv_freq = rope_inverse_frequencies({}, args.head_dim).cuda();
  for (int64_t rank : args.ranks) {
    for (int64_t batch : args.batches) {
      for (int64_t length : args.lengths) {
        torch::NoGradGuard no_grad;
        const int64_t latent = length - args.exact_window;
        kernels::LowRankDecodeInputs in;
        in.key_latents = at::randn({batch, length, rank}, bf16);
        in.value_latents = at::randn({batch, length, rank}, bf16);
        in.key_up = at::randn({width, rank}, bf16) / std::sqrt(static_cast<double>(rank));
        in.value_up = at::randn({width, rank}, bf16) / std::sqrt(static_cast<double>(rank));
        in.latent_positions = at::arange(length, bf16.dtype(at::kLong)).unsqueeze(0).repeat({batch, 1});
        in.latent_tokens = latent;
        in.exact_keys = at::randn({batch, args.kv_heads, args.exact_window, args.head_dim}, bf16);
        in.exact_values = at::randn({batch, args.kv_heads, args.exact_window, args.head_dim}, bf16);
        in.exact_positions = in.latent_positions.narrow(1, latent, args.exact_window).contiguous();
        in.inv_freq = inv_freq;
        at::Tensor q = at::randn({batch, args.heads, 1, args.head_dim}, bf16);
        const double scale = 1.0 / std::sqrt(static_cast<double>(args.head_dim));
        if (!kernels::low_rank_decode_supported(in, args.heads)) {
          std::printf("%6lld %8lld %5lld  (the low-rank kernel does not support this shape)\n",
                      static_cast<long long>(batch), static_cast<long long>(length), static_cast<long long>(rank));
          continue;
        }
        at::Tensor out = at::empty_like(q);
        const double ours_ms =
            median_ms([&] { kernels::low_rank_decode_attention(q, in, scale, out); }, args.iterations);
        at::Tensor k = at::randn({batch, args.kv_heads, length, args.head_dim}, bf16), v = at::randn_like(k);
        const double full_ms = median_ms(
            [&] { kernels::decode_attention(q, k, v, in.latent_positions, scale, {}, out); }, args.iterations);
        const at::Tensor old_positions = in.latent_positions.narrow(1, 0, latent);
        auto rebuild = [&] {
          auto lift = [&](const at::Tensor& latents, const at::Tensor& up) {
            return at::matmul(latents.narrow(1, 0, latent), up.t())
                .view({batch, latent, args.kv_heads, args.head_dim})
                .transpose(1, 2);
          };
          at::Tensor keys =
              apply_rope(lift(in.key_latents, in.key_up), rope_angles(inv_freq, old_positions, at::kBFloat16));
          at::Tensor all_keys = at::cat({keys, in.exact_keys}, 2);
          at::Tensor all_values = at::cat({lift(in.value_latents, in.value_up), in.exact_values}, 2);
          kernels::decode_attention(q, all_keys, all_values, in.latent_positions, scale, {}, out);
        };
        const double rebuild_ms = median_ms(rebuild, args.iterations);
        const double latent_bytes = 2.0 * static_cast<double>(in.key_latents.nbytes());
        std::printf("%6lld %8lld %5lld %10.1f | %10.1f %10.1f %10.1f | %8.2fx %10.2fx\n", static_cast<long long>(batch),
                    static_cast<long long>(length), static_cast<long long>(rank), latent_bytes / 1048576.0,
                    ours_ms * 1e3, full_ms * 1e3, rebuild_ms * 1e3, full_ms / ours_ms, rebuild_ms / ours_ms);
      }
    }
  }
}

// KIVI's layout (codes with group scales, 32 newest tokens in bf16) on the same shapes: the quantized kernel against
// the full-cache kernel on bf16 K/V of the same length and against the runtime's path without it, which dequantizes
// the whole cache into memory each step and then attends it.
void run_quantized_rows(const BenchArgs& args) {
  const auto bf16 = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  constexpr int64_t kGroup = 32, kResidual = 32;
  std::printf("\nKIVI (keys per channel, values per token, group %lld, %lld newest tokens in bf16)\n",
              static_cast<long long>(kGroup), static_cast<long long>(kResidual));
  std::printf("%6s %8s %4s %9s | %10s %12s %10s %12s | %8s %12s %10s\n", "batch", "tokens", "bits", "KV MiB",
              "kernel us", "CUDA-core us", "full us", "dequant us", "full/ours", "dequant/ours", "% copy");
  for (int64_t batch : args.batches) {
    for (int64_t length : args.lengths) {
      for (int64_t bits : args.kivi_bits) {
        torch::NoGradGuard no_grad;
        const int64_t quantized = std::max<int64_t>(0, length - kResidual) / kGroup * kGroup;
        at::Tensor q = at::randn({batch, args.heads, 1, args.head_dim}, bf16);
        at::Tensor k = at::randn({batch, args.kv_heads, length, args.head_dim}, bf16);
        at::Tensor v = at::randn({batch, args.kv_heads, length, args.head_dim}, bf16);
        at::Tensor positions = at::arange(length, bf16.dtype(at::kLong)).unsqueeze(0).repeat({batch, 1});
        const kernels::QuantizedDecodeInputs in = quantize_for_decode(k, v, positions, quantized, bits, kGroup);
        const QuantizedBlock keys{in.key_codes, in.key_scale, in.key_minimum};
        const QuantizedBlock values{in.value_codes, in.value_scale, in.value_minimum};
        if (!kernels::quantized_decode_supported(in, args.heads)) {
          std::printf("%6lld %8lld %4lld  (unsupported shape)\n", static_cast<long long>(batch),
                      static_cast<long long>(length), static_cast<long long>(bits));
          continue;
        }
        const double scale = 1.0 / std::sqrt(static_cast<double>(args.head_dim));
        at::Tensor out = at::empty_like(q);
        const double ours_ms =
            median_ms([&] { kernels::quantized_decode_attention(q, in, scale, out); }, args.iterations);
        const double cuda_cores_ms =
            median_ms([&] { kernels::quantized_decode_attention(q, in, scale, out, 0, /*tensor_cores=*/false); },
                      args.iterations);
        at::Tensor source = at::cat({k.flatten(), v.flatten()}), target = at::empty_like(source);
        const double copy_gbs = 2.0 * static_cast<double>(source.nbytes()) /
                                median_ms([&] { target.copy_(source); }, args.iterations) / 1e6;
        const double full_ms =
            median_ms([&] { kernels::decode_attention(q, k, v, positions, scale, {}, out); }, args.iterations);
        auto dequantized = [&] {
          at::Tensor all_keys =
              at::cat({dequantize_keys_per_channel(keys, bits, at::kBFloat16).flatten(2, 3), in.recent_keys}, 2);
          at::Tensor all_values =
              at::cat({dequantize_values_per_token(values, bits, kGroup, at::kBFloat16), in.recent_values}, 2);
          kernels::decode_attention(q, all_keys, all_values, positions, scale, {}, out);
        };
        const double dequant_ms = median_ms(dequantized, args.iterations);
        const double held = static_cast<double>(
            keys.codes.nbytes() + keys.scale.nbytes() + keys.minimum.nbytes() + values.codes.nbytes() +
            values.scale.nbytes() + values.minimum.nbytes() + in.recent_keys.nbytes() + in.recent_values.nbytes());
        std::printf("%6lld %8lld %4lld %9.1f | %10.1f %12.1f %10.1f %12.1f | %7.2fx %11.2fx %9.1f%%\n",
                    static_cast<long long>(batch), static_cast<long long>(length), static_cast<long long>(bits),
                    held / 1048576.0, ours_ms * 1e3, cuda_cores_ms * 1e3, full_ms * 1e3, dequant_ms * 1e3,
                    full_ms / ours_ms, dequant_ms / ours_ms, 100.0 * held / ours_ms / 1e6 / copy_gbs);
      }
    }
  }
}

// DuoAttention's and RLKV's layout on the same shapes: some KV heads keep every token, the others a ring of sink +
// recent slots. One launch over both (each head reads its own part) against the full cache's kernel, and against the
// runtime's path before it, which assembled one padded per-head view of both parts each step and attended it.
void run_mixed_head_rows(const BenchArgs& args) {
  const auto bf16 = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  const auto longs = bf16.dtype(at::kLong);
  const int64_t streaming = args.streaming_heads, full_heads = args.kv_heads - streaming;
  const int64_t ring = args.streaming_window.at(0) + args.streaming_window.at(1);
  std::printf("\nMixed heads: %lld of %lld KV heads streaming (sink %lld + recent %lld slots), the rest full\n",
              static_cast<long long>(streaming), static_cast<long long>(args.kv_heads),
              static_cast<long long>(args.streaming_window.at(0)), static_cast<long long>(args.streaming_window.at(1)));
  std::printf("%6s %8s %9s | %10s %10s %12s | %8s %13s\n", "batch", "tokens", "KV MiB", "kernel us", "full us",
              "assembled us", "full/ours", "assembled/ours");
  for (int64_t batch : args.batches) {
    for (int64_t length : args.lengths) {
      torch::NoGradGuard no_grad;
      at::Tensor q = at::randn({batch, args.heads, 1, args.head_dim}, bf16);
      at::Tensor k = at::randn({batch, args.kv_heads, length, args.head_dim}, bf16), v = at::randn_like(k);
      at::Tensor positions = at::arange(length, longs).unsqueeze(0).repeat({batch, 1});
      // Streaming heads interleaved with full ones: the odd heads first, then the even ones.
      kernels::DecodeHeadPart full_part, ring_part;
      for (int64_t i = 0; i < args.kv_heads; ++i) {
        const int64_t h = i < args.kv_heads / 2 ? 2 * i + 1 : 2 * (i - args.kv_heads / 2);
        (i < streaming ? ring_part : full_part).heads.push_back(h);
      }
      auto heads_of = [&](const std::vector<int64_t>& heads) { return at::tensor(heads, longs); };
      full_part.keys = k.index_select(1, heads_of(full_part.heads));
      full_part.values = v.index_select(1, heads_of(full_part.heads));
      full_part.positions = positions;
      const int64_t held = std::min(ring, length);
      ring_part.keys = at::randn({batch, streaming, ring, args.head_dim}, bf16);
      ring_part.values = at::randn_like(ring_part.keys);
      ring_part.positions = at::full({batch, ring}, -1, longs);
      ring_part.positions.narrow(1, 0, held).copy_(positions.narrow(1, length - held, held));
      kernels::DecodeHeadParts parts{ring_part};
      if (full_heads > 0) parts.insert(parts.begin(), full_part);
      if (!kernels::decode_by_head_supported(parts, args.heads)) {
        std::printf("%6lld %8lld  (unsupported shape)\n", static_cast<long long>(batch),
                    static_cast<long long>(length));
        continue;
      }
      const double scale = 1.0 / std::sqrt(static_cast<double>(args.head_dim));
      at::Tensor out = at::empty_like(q);
      const double ours_ms =
          median_ms([&] { kernels::decode_attention_by_head(q, parts, scale, {}, out); }, args.iterations);
      const double full_ms =
          median_ms([&] { kernels::decode_attention(q, k, v, positions, scale, {}, out); }, args.iterations);
      auto assembled = [&] {
        const int64_t slots = std::max(length, ring);
        at::Tensor keys = at::zeros({batch, args.kv_heads, slots, args.head_dim}, bf16), values = at::zeros_like(keys);
        at::Tensor view_positions = at::full({batch, args.kv_heads, slots}, -1, longs);
        for (const kernels::DecodeHeadPart& part : parts) {
          const at::Tensor heads = heads_of(part.heads);
          const int64_t n = part.keys.size(2);
          keys.narrow(2, 0, n).index_copy_(1, heads, part.keys);
          values.narrow(2, 0, n).index_copy_(1, heads, part.values);
          view_positions.narrow(2, 0, n).index_copy_(1, heads,
                                                     part.positions.unsqueeze(1).expand({-1, heads.numel(), -1}));
        }
        kernels::decode_attention(q, keys, values, view_positions, scale, {}, out);
      };
      const double assembled_ms = median_ms(assembled, args.iterations);
      double bytes = 0;
      for (const kernels::DecodeHeadPart& part : parts) bytes += 2.0 * static_cast<double>(part.keys.nbytes());
      std::printf("%6lld %8lld %9.1f | %10.1f %10.1f %12.1f | %7.2fx %12.2fx\n", static_cast<long long>(batch),
                  static_cast<long long>(length), bytes / 1048576.0, ours_ms * 1e3, full_ms * 1e3, assembled_ms * 1e3,
                  full_ms / ours_ms, assembled_ms / ours_ms);
    }
  }
}

void run_decode_bench(const BenchArgs& args) {
  if (!torch::cuda::is_available()) fail_input("command line", "bench decode", "needs a CUDA device");
  const auto props = at::cuda::getCurrentDeviceProperties();
  const auto bf16 = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  std::printf(
      "decode attention on %s: %lld query heads, %lld KV heads, head_dim %lld, bf16; median of %lld bursts of 10 "
      "back-to-back runs\n",
      props->name, static_cast<long long>(args.heads), static_cast<long long>(args.kv_heads),
      static_cast<long long>(args.head_dim), static_cast<long long>(args.iterations));
#ifndef KVFORGE_HAVE_FLASHINFER
  std::printf("(FlashInfer column empty: this build has no FlashInfer; see README, \"Decode kernel\")\n");
#endif
  std::printf("%6s %8s %9s | %10s %9s %7s | %10s %9s %7s | %13s %7s | %9s | %8s %8s %8s\n", "batch", "tokens", "KV MiB",
              "copy GB/s", "kernel us", "% copy", "SDPA us", "SDPA GB/s", "% copy", "FlashInfer us", "% copy",
              "masked us", "SDPA/ours", "FI/ours", "masked/ours");
  for (int64_t batch : args.batches) {
    for (int64_t length : args.lengths) {
      torch::NoGradGuard no_grad;
      at::Tensor q = at::randn({batch, args.heads, 1, args.head_dim}, bf16);
      at::Tensor k = at::randn({batch, args.kv_heads, length, args.head_dim}, bf16);
      at::Tensor v = at::randn({batch, args.kv_heads, length, args.head_dim}, bf16);
      at::Tensor positions = at::arange(length, bf16.dtype(at::kLong)).unsqueeze(0).repeat({batch, 1});
      const double scale = 1.0 / std::sqrt(static_cast<double>(args.head_dim));
      const double kv_bytes = 2.0 * k.nbytes();
      // Copy bandwidth: reading and writing the K/V bytes once, the bound a read-only kernel is held to.
      at::Tensor source = at::cat({k.flatten(), v.flatten()}), target = at::empty_like(source);
      const double copy_ms = median_ms([&] { target.copy_(source); }, args.iterations);
      const double copy_gbs = 2 * kv_bytes / copy_ms / 1e6;
      at::Tensor out = at::empty_like(q);
      const double sdpa_ms = median_ms(
          [&] {
            at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/false, scale,
                                             /*enable_gqa=*/true);
          },
          args.iterations);
      const double sdpa_gbs = kv_bytes / sdpa_ms / 1e6;
      // The runtime's path before the kernel: scores materialised, boolean mask, softmax, matmul.
      at::Tensor mask = attention_mask(positions.narrow(1, length - 1, 1), positions, /*sliding_window=*/0);
      const double masked_ms = median_ms([&] { grouped_attention(q, k, v, mask); }, args.iterations);
      double flashinfer_ms = 0;  // 0: not measured
#ifdef KVFORGE_HAVE_FLASHINFER
      if (length % 16 == 0) {
        FlashInferDecode flashinfer(q, k, v, scale);
        flashinfer_ms = median_ms([&] { flashinfer.run(out); }, args.iterations);
        // Both read the same cache: their outputs agree to bf16 rounding, or the comparison means nothing.
        const at::Tensor ours = kernels::decode_attention(q, k, v, positions, scale).to(at::kFloat);
        const double difference = ((out.to(at::kFloat) - ours).abs().max() / ours.abs().max()).item<double>();
        if (difference > 2e-2) std::printf("FlashInfer and this kernel differ by %.3g (relative)\n", difference);
      }
#endif
      auto column = [](double ms) {
        if (ms <= 0) return std::string("-");
        char text[32];
        std::snprintf(text, sizeof text, "%.1f", ms * 1e3);
        return std::string(text);
      };
      for (int64_t splits : args.splits) {
        const double ours_ms = median_ms(
            [&] { kernels::decode_attention(q, k, v, positions, scale, /*window=*/{}, out, splits); }, args.iterations);
        const double ours_gbs = kv_bytes / ours_ms / 1e6;
        const double flashinfer_share = flashinfer_ms > 0 ? 100 * kv_bytes / flashinfer_ms / 1e6 / copy_gbs : 0;
        std::printf(
            "%6lld %8lld %9.1f | %10.0f %9.1f %6.1f%% | %10.1f %9.0f %6.1f%% | %13s %6.1f%% | %9.1f | %8.2fx %7.2fx "
            "%10.2fx%s\n",
            static_cast<long long>(batch), static_cast<long long>(length), kv_bytes / 1048576.0, copy_gbs,
            ours_ms * 1e3, 100 * ours_gbs / copy_gbs, sdpa_ms * 1e3, sdpa_gbs, 100 * sdpa_gbs / copy_gbs,
            column(flashinfer_ms).c_str(), flashinfer_share, masked_ms * 1e3, sdpa_ms / ours_ms,
            flashinfer_ms / ours_ms, masked_ms / ours_ms,
            splits > 0 ? (" (" + std::to_string(splits) + " splits)").c_str() : "");
      }
    }
  }
  if (!args.ranks.empty() && args.ranks.front() > 0) run_low_rank_rows(args);
  if (!args.kivi_bits.empty() && args.kivi_bits.front() > 0) run_quantized_rows(args);
  if (args.streaming_heads > 0) run_mixed_head_rows(args);
}
#else
void run_decode_bench(const BenchArgs&) { fail_input("command line", "bench decode", "this build has no CUDA"); }
#endif

}  // namespace

void add_bench_command(CLI::App& app) {
  CLI::App* bench =
      app.add_subcommand("bench", "Benchmarks that print ratios against baselines measured in the same run");
  bench->require_subcommand(1);
  auto args = std::make_shared<BenchArgs>();
  CLI::App* decode = bench->add_subcommand("decode", "Decode attention: this kernel vs PyTorch SDPA vs copy bandwidth");
  decode->add_option("--batch", args->batches, "batch sizes")->delimiter(',');
  decode->add_option("--lengths", args->lengths, "cached tokens per sequence")->delimiter(',');
  decode->add_option("--heads", args->heads, "query heads");
  decode->add_option("--kv-heads", args->kv_heads, "KV heads");
  decode->add_option("--head-dim", args->head_dim, "64 or 128");
  decode->add_option("--iterations", args->iterations, "timed bursts of 10 back-to-back runs per measurement");
  decode->add_option("--splits", args->splits, "chunks per sequence to try (0 = the kernel's choice)")->delimiter(',');
  decode->add_option("--low-rank", args->ranks, "CSKV latent ranks (K = V) for the low-rank rows; 0 = none")
      ->delimiter(',');
  decode->add_option("--exact-window", args->exact_window, "CSKV: exact recent tokens beside the latents");
  decode->add_option("--kivi-bits", args->kivi_bits, "KIVI code widths (2, 4) for the quantized rows; 0 = none")
      ->delimiter(',');
  decode->add_option("--streaming-heads", args->streaming_heads,
                     "mixed-head rows: KV heads that keep only sink + recent (default half); 0 = none");
  decode->add_option("--streaming-window", args->streaming_window, "mixed-head rows: SINK,RECENT slots")
      ->delimiter(',')
      ->expected(2);
  decode->callback([args] {
    if (args->streaming_heads < 0 || args->streaming_heads > args->kv_heads)
      fail_input("command line", "--streaming-heads", "0 to --kv-heads (" + std::to_string(args->kv_heads) + ")");
    if (args->streaming_window.size() != 2 || args->streaming_window[0] < 0 || args->streaming_window[1] < 1)
      fail_input("command line", "--streaming-window", "SINK,RECENT with SINK >= 0 and RECENT >= 1");
    run_decode_bench(*args);
  });
  add_gla_bench(*bench);
  add_generate_bench(*bench);
}

}  // namespace kvforge
