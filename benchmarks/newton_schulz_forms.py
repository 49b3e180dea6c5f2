"""Newton–Schulz alone, in its standard and its Gram form (20_optim), side by side on one stack of wide matrices.

    python benchmarks/newton_schulz_forms.py [--shape 4,1024,2816] [--rounds 5] [--dtype bfloat16] [--threads 2] [--device cpu]
        [--checkpoint runs/demo/checkpoint_000300.pt]

Each round times one call of each form, in alternating order; the median over rounds is printed with the ratio, and
the products' operations as PyTorch's `FlopCounterMode` counts them. On a CUDA device the symmetric products
(`medllm.kernels.sym_product`) are timed too, in both forms. The default shape is four of medium's 72 wide matrices
(1024 × 2816): on a 2-core CPU a call takes seconds. Each form's distance from the float64 iteration is printed too,
on the timed (Gaussian) stack and, with `--checkpoint`, on the wide momentum buffers of a `medllm-train` checkpoint's
Muon: the matrices the iteration meets in training.
"""
import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from medllm.checkpoint import load_checkpoint
from medllm.optim import GRAM_MIN_ASPECT, newton_schulz


def flops(shape, **kw) -> int:
    "The products' operations of one call, counted on meta tensors."
    with FlopCounterMode(display=False) as fc: newton_schulz(torch.empty(shape, device="meta"), **kw)
    return fc.get_total_flops()


def reference(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    "G with its float64 iteration, computed once for every form."
    return G, newton_schulz(G.double(), dtype=torch.float64)


def distance(G_ref: tuple[torch.Tensor, torch.Tensor], dtype, **kw) -> float:
    "How far one form lands from the float64 iteration, relative."
    G, ref = G_ref
    return ((newton_schulz(G, dtype=dtype, **kw).double() - ref).norm() / ref.norm()).item()


def momentum_buffers(path: str) -> list[torch.Tensor]:
    "The Muon momentum buffers of a checkpoint that are wide enough for the Gram form."
    state = load_checkpoint(path)["optimizer"]["muon"]["state"].values()
    return [s["momentum_buffer"] for s in state if max(s["momentum_buffer"].shape) >= GRAM_MIN_ASPECT * min(s["momentum_buffer"].shape)]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="4,1024,2816", help="k,m,n: a stack of k matrices m × n, at least twice as wide as tall")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint", help="a medllm-train checkpoint: each form's distance from float64 on its wide momentum buffers")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    shape, dev, dtype = tuple(int(x) for x in a.shape.split(",")), torch.device(a.device), getattr(torch, a.dtype)
    if len(shape) != 3 or shape[2] < GRAM_MIN_ASPECT * shape[1]:
        p.error(f"--shape must be k,m,n with n >= {GRAM_MIN_ASPECT}m (the Gram form's), got {a.shape}")
    forms = {"standard": dict(fold=True), "gram": dict(fold=True, gram=True)}
    if dev.type == "cuda":
        forms |= {"standard, symmetric": dict(fold=True, symmetric=True), "gram, symmetric": dict(fold=True, symmetric=True, gram=True)}
    torch.manual_seed(0)
    G = torch.randn(shape, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for kw in forms.values(): newton_schulz(G, dtype=dtype, **kw)   # warm up: kernels, autotuning
    times = {k: [] for k in forms}
    for r in range(a.rounds):
        for k in (list(forms) if r % 2 == 0 else list(forms)[::-1]):
            sync(); t0 = time.perf_counter()
            newton_schulz(G, dtype=dtype, **forms[k])
            sync(); times[k].append(time.perf_counter() - t0)
    base = statistics.median(times["standard"])
    print(f"Newton–Schulz, five iterations, {a.dtype}, on {shape[0]} matrices {shape[1]} × {shape[2]} ({dev}, {a.rounds} rounds; "
          f"products: {flops(shape) / 1e9:.0f} GFLOP standard, {flops(shape, gram=True) / 1e9:.0f} in the Gram form)")
    timed = reference(G)
    bufs = [reference(b.to(dev)) for b in momentum_buffers(a.checkpoint)] if a.checkpoint else []
    for k, ts in times.items():
        t = statistics.median(ts)
        line = f"  {k:22} {t * 1e3:10.1f} ms   {base / t:.2f}x the standard form   from float64: {distance(timed, dtype, **forms[k]):.2%}"
        if bufs:
            d = [distance(b, dtype, **forms[k]) for b in bufs]
            line += f", on the checkpoint's {len(d)} wide momentum buffers {statistics.mean(d):.2%} (at most {max(d):.2%})"
        print(line)


if __name__ == "__main__":
    main()
