"""The model compiled whole (`fit --compile`) against block by block (`fit --compile_blocks`), side by side in one run.

    python benchmarks/compile_time.py [--preset small] [--shape 1x64] [--steps 3] [--threads 2] [--device cpu]

Each form runs in a process of its own with an empty Inductor cache (a fresh TORCHINDUCTOR_CACHE_DIR), so each first
step pays the whole compilation, as a first run on a new machine does: the first step's seconds (compilation, mostly),
then the median of `--steps` more steps (forward and backward, bf16 autocast on a GPU, float32 on a CPU), the loss of
the first step, and the ratios. Triton's own cache (TRITON_CACHE_DIR) is emptied as well.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def one(preset: str, batch: int, seq: int, steps: int, blocks: bool, device: str, layers: int | None) -> dict:
    "In this process: build, compile and time the model one way; a dict of figures."
    import torch
    from medllm.core import get_device
    from medllm.model import GPT, get_config
    from medllm.train import compile_model
    dev = get_device(device)
    torch.manual_seed(0)
    kw = {"n_layer": layers} if layers else {}
    model = GPT(get_config(preset, vocab_size=50304, **kw)).to(dev)
    model.loss_impl = "full"                                  # what --loss auto takes when compiled
    train = compile_model(model, True, False, dev, blocks)
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randint(0, 50304, (batch, seq), generator=g).to(dev) for _ in range(2))
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    def step():
        if dev.type == "cuda": torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32): loss = train(x, y)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if dev.type == "cuda": torch.cuda.synchronize()
        return time.perf_counter() - t, loss.item()
    first, loss = step()
    return {"blocks": blocks, "first_step_s": first, "step_s": statistics.median(step()[0] for _ in range(steps)), "loss": loss,
            "layers": len(model.blocks)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--shape", default="1x64", help="batch x sequence length")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--layers", type=int, default=None, help="override the preset's number of blocks (the tests use 2)")
    p.add_argument("--one", choices=("whole", "blocks"), help=argparse.SUPPRESS)   # internal: one form, in this process
    a = p.parse_args()
    try: batch, seq = (int(v) for v in a.shape.lower().split("x"))
    except ValueError: p.error(f"--shape must be BATCHxSEQ (e.g. 1x64), got {a.shape!r}")
    if min(batch, seq, a.steps, a.threads) < 1: p.error("--shape, --steps and --threads must be >= 1")
    if a.one:
        import torch
        torch.set_num_threads(a.threads)
        print(json.dumps(one(a.preset, batch, seq, a.steps, a.one == "blocks", a.device, a.layers)))
        return
    res = {}
    for form in ("whole", "blocks"):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": f"{cache}/inductor", "TRITON_CACHE_DIR": f"{cache}/triton",
                   "OMP_NUM_THREADS": str(a.threads)}
            r = subprocess.run([sys.executable, __file__, "--one", form, *sys.argv[1:]], capture_output=True, text=True, env=env)
        if r.returncode: sys.exit(f"compile_time.py: the {form} run failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        res[form] = json.loads(r.stdout.strip().splitlines()[-1])
        f = res[form]
        print(f"{a.preset} ({f['layers']} blocks) {batch}x{seq} on {a.device}, compiled {form:6}: first step {f['first_step_s']:6.1f} s, "
              f"then {f['step_s'] * 1e3:8.1f} ms a step, loss {f['loss']:.5f}", flush=True)
    w, b = res["whole"], res["blocks"]
    print(f"block by block: first step {w['first_step_s'] / b['first_step_s']:.2f}x faster, steps {w['step_s'] / b['step_s']:.2f}x the "
          f"whole model's speed, loss {abs(w['loss'] - b['loss']):.1e} apart")


if __name__ == "__main__":
    main()
