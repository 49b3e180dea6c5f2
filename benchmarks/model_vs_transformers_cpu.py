"""medllm's GPT vs transformers' Qwen3ForCausalLM on the CPU: forward + backward, identical shapes and weights, one run.

    python benchmarks/model_vs_transformers_cpu.py [--model tiny] [--vocab_size 32768] [--seq_len 256]
        [--batch_size 8] [--steps 4] [--rounds 3] [--dtypes float32,bfloat16] [--threads 2]

The medllm model is exported with `medllm.export.export_hf` and loaded by transformers, so both compute the same
function (the logit difference is printed). Each library runs its own training path: medllm's `model(x, targets)`
(fused linear cross-entropy), transformers' `model(input_ids=x, labels=x)` (logits, then its loss). Each round times `--steps` forward+backward steps of each model,
alternating which goes first; tokens/s is the median over rounds. Target: ratio medllm / transformers >= 1.2 for
the tiny shape at sequence 256. Shapes follow ANCHORS.md's CPU row (6 L, d 384, vocab 32768, seq 256, batch 8).
"""
import argparse
import json
import statistics
import tempfile
import time

import torch

from medllm.core import autocast
from medllm.export import export_hf
from medllm.model import GPT, get_config
from medllm.tokenizer import train_tokenizer


def _tokenizer_stub(vocab_size: int):
    "A real (tiny) trained tokenizer: export needs one; its ids are all below vocab_size."
    return train_tokenizer(["the heart pumps blood " * 50, "insulin lowers glucose " * 50], vocab_size=300)


def step_fn(model, hf: bool, x, y, dtype):
    "One forward + backward through each library's own training path: medllm `model(x, targets)`, transformers `labels=`."
    with autocast(torch.device("cpu"), dtype):
        loss = model(input_ids=x, labels=x).loss if hf else model(x, y)
    loss.backward()
    return loss


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--vocab_size", type=int, default=32768)
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import AutoModelForCausalLM
    import transformers
    torch.manual_seed(0)
    ours = GPT(get_config(a.model, vocab_size=a.vocab_size, seq_len=a.seq_len))
    with torch.no_grad():
        for n, w in ours.named_parameters():
            if not w.any(): w.normal_(std=0.02)  # wake zero-initialised projections: same work, no special zeros
    with tempfile.TemporaryDirectory() as d:
        export_hf(ours, _tokenizer_stub(a.vocab_size), d)
        hf = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="sdpa")
    hf.train(); ours.train()
    x = torch.randint(0, a.vocab_size, (a.batch_size, a.seq_len))
    y = torch.randint(0, a.vocab_size, (a.batch_size, a.seq_len))
    with torch.no_grad(): diff = (ours(x) - hf(input_ids=x).logits).abs().max().item()
    print(f"{a.model}: {ours.num_params() / 1e6:.1f}M params, vocab {a.vocab_size}, batch {a.batch_size} x {a.seq_len}, "
          f"{a.threads} threads, torch {torch.__version__}, transformers {transformers.__version__}; max |logit diff| {diff:.2e}")
    results = []
    for dt_name in a.dtypes.split(","):
        dtype = getattr(torch, dt_name)
        models = {"medllm": (ours, False), "transformers Qwen3": (hf, True)}
        for m, is_hf in models.values():  # warm-up
            step_fn(m, is_hf, x, y, dtype); m.zero_grad(set_to_none=True)
        tps = {k: [] for k in models}
        for r in range(a.rounds):
            for k in (list(models) if r % 2 == 0 else list(reversed(models))):
                m, is_hf = models[k]
                t0 = time.perf_counter()
                for _ in range(a.steps):
                    step_fn(m, is_hf, x, y, dtype); m.zero_grad(set_to_none=True)
                tps[k].append(a.steps * x.numel() / (time.perf_counter() - t0))
        med = {k: statistics.median(v) for k, v in tps.items()}
        ratio = med["medllm"] / med["transformers Qwen3"]
        results.append({"dtype": dt_name, **{f"{k} tokens/s": v for k, v in med.items()}, "ratio": ratio})
    print("| dtype | medllm tokens/s | transformers Qwen3 tokens/s | ratio |\n|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['dtype']} | {r['medllm tokens/s']:.0f} | {r['transformers Qwen3 tokens/s']:.0f} | {r['ratio']:.2f} |")
    if a.json:
        with open(a.json, "w") as f: json.dump({"args": vars(a), "max_logit_diff": diff, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
