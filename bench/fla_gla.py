"""flash-linear-attention's chunked GLA kernels on the shapes `kvforge bench gla` times, in its output format.

chunk_simple_gla is the same operation as kvforge's gated_linear_attention (one scalar gate per head and token);
chunk_gla decays per key channel (the gate broadcast over channels here), the kernel the issue names. Scale 1, bf16,
forward and forward + backward, timed as `kvforge bench` times: the median over bursts of 10 back-to-back calls.
usage: python bench/fla_gla.py --batch 4 --lengths 2048,8192 --heads 32 --features 128 --value-dim 128
"""
import argparse

import torch
from fla.ops.gla import chunk_gla
from fla.ops.simple_gla import chunk_simple_gla


BURST = 10  # as cli/cuda_timing.h


def median_ms(work, iterations):
    for _ in range(3):
        work()
    times = []
    for _ in range(iterations):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(BURST):
            work()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / BURST)
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", default="4")
    parser.add_argument("--lengths", default="2048,8192")
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--value-dim", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--time-refused-backward", action="store_true",
                        help="time the gated backward fla refuses on Hopper with Triton < 3.7.1 (fla issue #640: its "
                             "gradients are wrong there, its speed is what it would be)")
    args = parser.parse_args()
    if args.time_refused_backward:
        import fla.ops.common.chunk_o as chunk_o
        chunk_o.IS_NVIDIA_HOPPER = False
        print("(fla's Hopper guard lifted: backward timings only; its gradients are wrong on this Triton)")
    torch.manual_seed(0)
    for batch in map(int, args.batch.split(",")):
        for tokens in map(int, args.lengths.split(",")):
            shape = (batch, tokens, args.heads)  # fla's layout: [batch, tokens, heads, dim]
            bf16 = dict(device="cuda", dtype=torch.bfloat16)
            q = (torch.rand(*shape, args.features, **bf16) * (4.0 / args.features)).requires_grad_()
            k = (torch.rand(*shape, args.features, **bf16) * (4.0 / args.features)).requires_grad_()
            v = torch.randn(*shape, args.value_dim, **bf16).requires_grad_()
            g = torch.nn.functional.logsigmoid(torch.randn(*shape, device="cuda") + 4).to(torch.bfloat16)
            g.requires_grad_()
            gk = g.detach().unsqueeze(-1).expand_as(k).contiguous().requires_grad_()
            grad = torch.randn(*shape, args.value_dim, **bf16)
            kernels = {
                "fla chunk_simple_gla": lambda: chunk_simple_gla(q, k, v, g=g, scale=1.0)[0],
                "fla chunk_gla": lambda: chunk_gla(q, k, v, g=gk, scale=1.0)[0],
            }
            for name, forward in kernels.items():
                def no_grad():
                    with torch.no_grad():
                        forward()
                def timed(work):  # fla refuses some kernels on some Triton versions: say so and go on
                    try:
                        return f"{median_ms(work, args.iterations):10.3f}"
                    except Exception as error:  # noqa: BLE001
                        return f"{'refused':>10} ({type(error).__name__}: {str(error).splitlines()[0][:80]})"
                fwd = timed(no_grad)
                both = timed(lambda: forward().backward(grad))
                print(f"{name:<28} {batch:6d} {args.heads:6d} {tokens:8d} {args.features:6d} {args.value_dim:6d} | "
                      f"{fwd} {both}", flush=True)


if __name__ == "__main__":
    main()
