"""What `fp8_swiglu`'s bounds cost in e5m2's range on a trained model: for every block's SwiGLU, the largest entries of the
gate's and the up's gradients as fractions of the bounds `fp8_swiglu` scales them by, and what the e5m2 cast loses under
either scaling (its bound, or the gradient's own largest entry as three `fp8_linear`s scale it): the share of nonzero
entries flushed to zero, and the cosine to float32. On the checkpoint's own validation batches, in float32.

    python benchmarks/fp8_bounds.py CHECKPOINT [--batches 4] [--output FILE]

The bounds (10_layers): |∂u| <= max|∂h| * max|silu(g)| and |∂g| <= max|∂h| * max|u| * SILU_SLOPE_MAX, h = silu(g) * u the
down projection's input. A bound that is loose by a factor r moves every entry r down e5m2's scale: log2(1/r) binades
of its ~31 (largest 57,344, smallest subnormal 2^-16) go unused, and the smallest entries fall below it sooner. This
measures r and the flushes rather than reasoning about them. No timing: the figures depend only on the weights and the
rows."""
import argparse
import datetime
import json
import math
import platform
import sys

import torch
import torch.nn.functional as F

from medllm.layers import FP8_GRAD, SILU_SLOPE_MAX, SwiGLU, to_fp8
from medllm.model import load_checkpoint_file, model_from_checkpoint
from medllm.tokenizer import tokenizer_from_spec
from medllm.train import TrainConfig, validation_batches


def cast_loss(d: torch.Tensor, amax: torch.Tensor) -> dict:
    "`d` cast to e5m2 scaled by `amax` (as `to_fp8` casts gradients), against `d`: nonzero entries flushed to zero, and the cosine."
    q, s = to_fp8(d, FP8_GRAD, amax)
    back = q.float() * s
    nonzero = d != 0
    return {"flushed": int((nonzero & (back == 0)).sum()), "nonzero": int(nonzero.sum()),
            "cosine": F.cosine_similarity(d.flatten().double(), back.flatten().double(), dim=0).item()}


def watch(mlp: SwiGLU, seen: dict) -> list:
    "Keep in `seen` the gate's and up's outputs and the down projection's input of each forward of `mlp`, with their gradients; the hooks' handles."
    def keep(name):
        def hook(module, args, out):
            t = args[0] if name == "h" else out
            t.retain_grad(); seen[name] = t
        return hook
    return [mlp.gate_proj.register_forward_hook(keep("g")), mlp.up_proj.register_forward_hook(keep("u")),
            mlp.down_proj.register_forward_hook(keep("h"))]


def block_stats(seen: dict) -> dict:
    "For one block and batch: each gradient's largest entry over its bound, and the cast's losses under both scalings."
    g, u = seen["g"].detach().float(), seen["u"].detach().float()
    dh_max = seen["h"].grad.abs().amax().float()
    out = {}
    for name, d, bound in (("up", seen["u"].grad.float(), dh_max * F.silu(g).abs().amax()),
                           ("gate", seen["g"].grad.float(), dh_max * u.abs().amax() * SILU_SLOPE_MAX)):
        amax = d.abs().amax()
        out[name] = {"ratio": (amax / bound).item() if bound > 0 else None,
                     "own": cast_loss(d, amax), "bound": cast_loss(d, bound)}
    return out


def summarise(per_batch: list[dict]) -> dict:
    "Over the batches: the smallest and largest ratio, flushes summed, the lowest cosine; for the gate and the up."
    out = {}
    for name in ("up", "gate"):
        ratios = [b[name]["ratio"] for b in per_batch if b[name]["ratio"] is not None]
        row = {"ratio_min": min(ratios, default=None), "ratio_max": max(ratios, default=None),
               "binades_unused_max": -math.log2(min(ratios)) if ratios else None}
        for scaling in ("own", "bound"):
            flushed = sum(b[name][scaling]["flushed"] for b in per_batch)
            nonzero = sum(b[name][scaling]["nonzero"] for b in per_batch)
            row[scaling] = {"flushed": flushed, "nonzero": nonzero, "flushed_share": flushed / nonzero if nonzero else None,
                            "cosine_min": min(b[name][scaling]["cosine"] for b in per_batch)}
        out[name] = row
    return out


def measure(path: str, batches: int) -> dict:
    ckpt = load_checkpoint_file(path)
    if "train_config" not in ckpt: raise ValueError(f"{path} holds no train_config: it was not saved by fit, so its validation rows are unknown")
    cfg = TrainConfig(**ckpt["train_config"])
    model = model_from_checkpoint(ckpt).float().train()
    mlps = [b.mlp for b in model.blocks]
    if not all(isinstance(m, SwiGLU) for m in mlps): raise ValueError(f"{path}: fp8_swiglu's bounds are SwiGLU's; this model's MLP is {type(mlps[0]).__name__}")
    val = validation_batches(cfg, tokenizer_from_spec(ckpt["tokenizer"]))[:batches]
    if not val: raise ValueError(f"{path}: its run's data gives no validation rows")
    seen = [{} for _ in mlps]
    handles = [h for m, s in zip(mlps, seen) for h in watch(m, s)]
    per_block = [[] for _ in mlps]
    for rows in val:
        model(rows[:, :-1], rows[:, 1:]).backward()
        for stats, s in zip(per_block, seen): stats.append(block_stats(s))
        model.zero_grad(set_to_none=True)
    for h in handles: h.remove()
    return {"checkpoint": path, "tokens_seen": ckpt.get("tokens_seen"),
            "model": cfg.model, "model_options": cfg.model_options, "fp8": [f for f in ("fp8_head", "fp8_mlp", "fp8_attn") if getattr(cfg, f)],
            "batches": len(val), "rows_per_batch": val[0].shape[0], "tokens_per_batch": val[0][:, 1:].numel(),
            "blocks": [summarise(b) for b in per_block]}


def _pct(x: float) -> str: return f"{100 * x:.4f}%"


def table(res: dict) -> str:
    head = "block | grad | max/bound (min..max) | binades unused | flushed, own max | flushed, bound | cosine, own | cosine, bound"
    lines = [head, "-" * len(head)]
    for i, b in enumerate(res["blocks"]):
        for name in ("up", "gate"):
            r = b[name]
            if r["ratio_min"] is None:
                lines.append(f"{i:5d} | {name:4s} | no gradient reaches it (zero down projection?)"); continue
            lines.append(f"{i:5d} | {name:4s} | {r['ratio_min']:.3f}..{r['ratio_max']:.3f} | {r['binades_unused_max']:.2f} | "
                         f"{_pct(r['own']['flushed_share'])} | {_pct(r['bound']['flushed_share'])} | "
                         f"{r['own']['cosine_min']:.6f} | {r['bound']['cosine_min']:.6f}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint saved by medllm-train (checkpoint_NNNNNN.pt)")
    p.add_argument("--batches", type=int, default=4, help="validation batches to measure (the run's batch size each)")
    p.add_argument("--output", help="write the figures as JSON here")
    a = p.parse_args()
    if a.batches < 1: p.error("--batches must be at least 1")
    try: res = measure(a.checkpoint, a.batches)
    except (ValueError, FileNotFoundError) as e:
        print(f"fp8_bounds: {e}", file=sys.stderr); sys.exit(2)
    res.update(torch=torch.__version__, machine=platform.processor() or platform.machine(), date=datetime.date.today().isoformat(),
               command="python " + " ".join(sys.argv))
    print(f"{res['checkpoint']}: {res['model']} {res['model_options'] or ''}, trained with {', '.join(res['fp8']) or 'no FP8'}; "
          f"{res['batches']} validation batches of {res['tokens_per_batch']:,} tokens, float32")
    print(table(res))
    if a.output:
        with open(a.output, "w") as f: json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
