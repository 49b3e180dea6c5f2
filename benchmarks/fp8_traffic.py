"""Memory traffic of FP8's casts: bytes that Inductor's generated kernels read and write for one medium block's forward and
backward, bf16 against FP8 (the MLP's products, attention's projections, both), side by side in one run.

    python benchmarks/fp8_traffic.py [--device cpu] [--tokens 2048,4096] [--output FILE]

The products (`torch._scaled_mm` or `mm`) run at a compute-bound rate, the generated kernels (norms, RoPE, SwiGLU, the
FP8 casts and their amax reductions, transposed copies) at a memory-bound one, so their bytes are what FP8's casts add
to a step. Inductor counts each kernel's buffers as it compiles (its `inductor_metrics` log: reads and writes of every
buffer a kernel touches once, not its caches or recomputation). Each setting compiles at two token counts: the
difference is the per-token part (activations), the rest per step (weights). On a CPU these are Inductor's C++
kernels, which fuse differently from its Triton kernels: a GPU run of this script counts the GPU's own.
No timing: the figures are bytes, the same on any machine for one torch version and device type."""
import argparse
import json
import logging
import platform

import torch
import torch._inductor.config as inductor_config
import torch._inductor.metrics as metrics
from torch._inductor.scheduler import ExternKernelSchedulerNode, NopKernelSchedulerNode

from medllm.core import get_device
from medllm.layers import Block, rope_tables
from medllm.model import get_config

SETTINGS = {"bf16": (False, False), "fp8 MLP": (False, True), "fp8 attention": (True, False), "fp8 both": (True, True)}


def traffic(device: torch.device, tokens: int, attn_fp8: bool, mlp_fp8: bool) -> dict:
    "Bytes of generated and of extern (product, attention) kernels for one compiled forward + backward of medium's block."
    c = get_config("medium")
    torch.manual_seed(0); torch._dynamo.reset()
    block = Block(c.d_model, c.n_head, c.n_kv_head, c.mlp_hidden, qk_norm=c.qk_norm).to(device)
    block.attn.fp8, block.mlp.fp8 = attn_fp8, mlp_fp8
    seq = min(tokens, 2048)
    cos, sin = rope_tables(torch.arange(seq, device=device), c.d_model // c.n_head)
    x = torch.randn(tokens // seq, seq, c.d_model, device=device, dtype=torch.bfloat16, requires_grad=True)  # the bf16 stream

    def step(x):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            block(x, cos, sin).float().square().mean().backward()
    metrics.reset()
    torch.compile(step)(x)
    out = {"generated": 0, "extern": 0, "kernels": 0}
    for node, elems in metrics.nodes_num_elem:   # (scheduler node, its bytes // 4)
        if isinstance(node, NopKernelSchedulerNode): continue
        out["extern" if isinstance(node, ExternKernelSchedulerNode) else "generated"] += elems * 4
        out["kernels"] += not isinstance(node, ExternKernelSchedulerNode)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--tokens", default="2048,4096", help="two token counts (multiples of 2048 past 2048)")
    p.add_argument("--output", default=None)
    a = p.parse_args()
    device = get_device(a.device)
    t0, t1 = (int(t) for t in a.tokens.split(","))
    torch._logging.set_logs(inductor_metrics=True)                     # Inductor counts bytes only with this log on
    logging.getLogger("torch._inductor.compile_fx.__inductor_metrics").addFilter(lambda record: False)   # counted, not printed
    res = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(), "tokens": [t0, t1], "settings": {}}
    with inductor_config.patch(fx_graph_cache=False):                  # compile every time: a cache hit counts nothing
        for name, (attn, mlp) in SETTINGS.items():
            a0, a1 = traffic(device, t0, attn, mlp), traffic(device, t1, attn, mlp)
            res["settings"][name] = {
                **{f"{k}_bytes_per_token": (a1[k] - a0[k]) / (t1 - t0) for k in ("generated", "extern")},
                **{f"{k}_bytes_per_step": a0[k] - t0 * (a1[k] - a0[k]) / (t1 - t0) for k in ("generated", "extern")},
                "generated_kernels": a0["kernels"]}
    base = res["settings"]["bf16"]["generated_bytes_per_token"]
    print(f"{device}, torch {torch.__version__}: one medium block, forward + backward, bytes of Inductor's kernels")
    print(f"{'setting':14} {'generated B/token':>18} {'vs bf16':>8} {'products B/token':>17} {'per step MB':>12} {'kernels':>8}")
    for name, s in res["settings"].items():
        print(f"{name:14} {s['generated_bytes_per_token']:18,.0f} {s['generated_bytes_per_token'] / base:8.2f} "
              f"{s['extern_bytes_per_token']:17,.0f} {s['generated_bytes_per_step'] / 1e6:12.1f} {s['generated_kernels']:8d}")
    if a.output:
        with open(a.output, "w") as f: json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
