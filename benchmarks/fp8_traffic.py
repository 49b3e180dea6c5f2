"""Memory traffic of FP8's casts: bytes that Inductor's generated kernels read and write for one medium block's forward and
backward, bf16 against FP8 (the MLP's products, as `fp8_swiglu` and as three `fp8_linear`s; attention's projections;
both), side by side in one run.

    python benchmarks/fp8_traffic.py [--device cpu] [--preset medium] [--tokens 2048,4096] [--output FILE]
    python benchmarks/fp8_traffic.py --device cuda --tokens 32768     # on a GPU: medium's micro-batch (16 x 2048), five compiles

The products (`torch._scaled_mm` or `mm`) run at a compute-bound rate, the generated kernels (norms, RoPE, SwiGLU, the
FP8 casts and their amax reductions, transposed copies) at a memory-bound one, so their bytes are what FP8's casts add
to a step. Inductor counts each kernel's buffers as it compiles (its `inductor_metrics` log: reads and writes of every
buffer a kernel touches once, not its caches or recomputation). Each setting compiles at two token counts: the
difference is the per-token part (activations), the rest per step (weights); one count gives the bytes at that batch,
weights included. On a CPU these are Inductor's C++ kernels, which fuse differently from its Triton kernels: a GPU run
of this script counts the GPU's own.
No timing: the figures are bytes, the same on any machine for one torch version and device type."""
import argparse
import datetime
import json
import logging
import platform
import sys

import torch
import torch._inductor.config as inductor_config
import torch._inductor.metrics as metrics
from torch._inductor.scheduler import ExternKernelSchedulerNode, NopKernelSchedulerNode

from medllm.core import get_device
from medllm.layers import Block, rope_tables
from medllm.model import get_config

SETTINGS = {   # attention's projections in FP8, the MLP's, the MLP as fp8_swiglu (else three fp8_linears, as in H200 run 9)
    "bf16": (False, False, True), "fp8 MLP": (False, True, True), "fp8 MLP, 3 linears": (False, True, False),
    "fp8 attention": (True, False, True), "fp8 both": (True, True, True)}


def traffic(device: torch.device, preset: str, tokens: int, attn_fp8: bool, mlp_fp8: bool, one_pass: bool = True) -> dict:
    "Bytes of generated and of extern (product, attention) kernels for one compiled forward + backward of one block of `preset`."
    c = get_config(preset)
    torch.manual_seed(0); torch._dynamo.reset()
    block = Block(c.d_model, c.n_head, c.n_kv_head, c.mlp_hidden, qk_norm=c.qk_norm).to(device)
    block.attn.fp8, block.mlp.fp8, block.mlp.one_pass = attn_fp8, mlp_fp8, one_pass
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
    p.add_argument("--preset", default="medium", help="the model whose block is compiled")
    p.add_argument("--tokens", default="2048,4096", help="one or two token counts (rows of up to 2048): multiples of 16, "
                   "and of 2048 past it; two split the bytes into per token and per step, one gives the bytes at that batch")
    p.add_argument("--output", default=None)
    a = p.parse_args()
    try: counts = [int(t) for t in a.tokens.split(",")]
    except ValueError: p.error(f"--tokens must be one or two counts, e.g. 2048,4096; got {a.tokens!r}")
    if len(counts) not in (1, 2) or counts != sorted(set(counts)) or any(t < 16 or t % 16 or (t > 2048 and t % 2048) for t in counts):
        p.error(f"--tokens: one or two increasing counts, multiples of 16 (FP8 products), and of 2048 past 2048; got {a.tokens!r}")
    try: get_config(a.preset)
    except ValueError as e: p.error(str(e))
    device = get_device(a.device)
    torch._logging.set_logs(inductor_metrics=True)                     # Inductor counts bytes only with this log on
    logging.getLogger("torch._inductor.compile_fx.__inductor_metrics").addFilter(lambda record: False)   # counted, not printed
    res = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
           "preset": a.preset, "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
           "tokens": counts, "settings": {}}
    what = "per token (the weights' bytes apart)" if len(counts) == 2 else f"per token at {counts[0]} tokens"
    print(f"{device}, torch {torch.__version__}: one {a.preset} block, forward + backward, bytes of Inductor's kernels {what}")
    print(f"{'setting':18} {'generated B/token':>18} {'vs bf16':>8} {'products B/token':>17} {'kernels':>8}"
          + (f" {'per step MB':>12}" if len(counts) == 2 else ""), flush=True)
    with inductor_config.patch(fx_graph_cache=False):                  # compile every time: a cache hit counts nothing
        for name, setting in SETTINGS.items():                         # each line and the JSON as soon as measured
            got = [traffic(device, a.preset, t, *setting) for t in counts]
            s = res["settings"][name] = {"generated_bytes": [g["generated"] for g in got], "extern_bytes": [g["extern"] for g in got],
                                         "generated_kernels": got[0]["kernels"]}
            for k in ("generated", "extern"):
                if len(counts) == 2:   # the per-token part (activations) and the rest (weights, once a step)
                    s[f"{k}_bytes_per_token"] = (got[1][k] - got[0][k]) / (counts[1] - counts[0])
                    s[f"{k}_bytes_per_step"] = got[0][k] - counts[0] * s[f"{k}_bytes_per_token"]
                else: s[f"{k}_bytes_per_token"] = got[0][k] / counts[0]   # at this batch, the weights' share included
            base = res["settings"]["bf16"]["generated_bytes_per_token"]
            print(f"{name:18} {s['generated_bytes_per_token']:18,.0f} {s['generated_bytes_per_token'] / base:8.2f} "
                  f"{s['extern_bytes_per_token']:17,.0f} {s['generated_kernels']:8d}"
                  + (f" {s['generated_bytes_per_step'] / 1e6:12.1f}" if len(counts) == 2 else ""), flush=True)
            if a.output:
                with open(a.output, "w") as f: json.dump(res, f, indent=1)

if __name__ == "__main__":
    main()
