"""The head, the MLPs and attention's projections in FP8 (`fp8_linear`, 10_layers) on the device: the arithmetic, the loss and gradients against
bf16, and the products' speed.

`CHECK=1 bash tools/gpu_bench.sh` runs it after Muon's check (GPU time is scarce: one call does both); alone:
`PYTHONPATH=. python3 tools/fp8_check.py [cuda|cpu]`.
- the arithmetic: the forward product and both backward ones against the float32 products of the FP8 values the operands
  round to (this checks the layouts cuBLAS's FP8 products want), with the gradient scaled by a bound (the head) and by its
  own largest entry (the MLPs);
- medium's head (16 × 2048 positions, C = 1024, V = 50,304) in a mean cross-entropy under bf16 autocast: the loss and the
  gradients' cosines against the bf16 head; compiled too with `FP8_CHECK_COMPILE=1` (about half a minute more on a GPU,
  so `gpu_bench.sh` leaves it out: its fp8=on candidate compiles the whole model with the FP8 head anyway);
- medium's MLP (SwiGLU, C = 1024, H = 2816, 16 × 2048 positions; `fp8_swiglu`) in FP8 against bf16 under bf16 autocast: output and
  gradients' cosines; the same for medium's attention (16 heads of 64: q, k, v and o in FP8, `fp8_attn`);
- the head's three products alone, bf16 (`torch.mm`) against FP8 (`torch._scaled_mm`), and the FP8 casts and copies
  the backward makes, unfused (the compiled step fuses some of them): median of 20 timings each; then the MLP's nine
  products per block in their four shapes, summed over medium's 24 blocks, and their casts and copies, unfused; then
  attention's twelve (four C × C projections, three products each).
On a CPU the shapes are small and nothing is timed (`FP8_CHECK_TIME=1` times them anyway): it checks the script."""
import os, statistics, sys, time
import torch
import torch.nn.functional as F
from medllm.core import sync
from medllm.layers import FP8_FORWARD, FP8_GRAD, CausalSelfAttention, SwiGLU, fp8_linear, rope_tables, to_fp8

dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else ("cuda" if torch.cuda.is_available() else "cpu"))
if dev.type == "cuda":
    cap = torch.cuda.get_device_capability(dev)
    print(f"fp8 check on {torch.cuda.get_device_name(dev)}, compute capability {cap[0]}.{cap[1]}")
    if cap < (8, 9): sys.exit("no FP8 tensor cores (compute capability under 8.9): nothing to check")
N, C, V, H = (16 * 2048, 1024, 50304, 2816) if dev.type == "cuda" else (256, 64, 512, 192)
failures = []


def check(name, ok, detail):
    print(f"{'ok' if ok else 'FAILED':7} {name:44} {detail}", flush=True)
    if not ok: failures.append(name)


# 1. The arithmetic, on a small head: fp8_linear's three products against the FP8 values' float32 products.
torch.manual_seed(0)
x = torch.randn(256, 128, device=dev, requires_grad=True); w = (torch.randn(1024, 128, device=dev) * 0.05).requires_grad_()
t = torch.randint(0, 1024, (256,), device=dev)
bound = 1 / torch.tensor(256.0, device=dev)
seen = {}
out = fp8_linear(x, w, bound)
out.register_hook(lambda g: seen.setdefault("g", g))
gx, gw = torch.autograd.grad(F.cross_entropy(out.float(), t), (x, w))
def value(a, dtype, amax):
    q, s = to_fp8(a, dtype, amax)
    return q.float() * s
xv, wv = value(x.detach(), FP8_FORWARD, x.detach().abs().amax()), value(w.detach(), FP8_FORWARD, w.detach().abs().amax())
gv = value(seen["g"], FP8_GRAD, bound)
for name, got, want in (("forward product", out, xv @ wv.T), ("G·W (input's gradient)", gx, gv @ wv), ("Gᵀ·X (weight's gradient)", gw, gv.T @ xv)):
    err = ((got.float() - want).norm() / want.norm()).item()
    check(name, err < 5e-3, f"relative difference {err:.2e} from the FP8 values' float32 product")
seen.clear()                                   # the MLPs' form: no bound, the gradient scaled by its own largest entry
out = fp8_linear(x, w)
out.register_hook(lambda g: seen.setdefault("g", g))
gx, gw = torch.autograd.grad(out, (x, w), torch.randn_like(out) * 1e-4)
gv = value(seen["g"], FP8_GRAD, seen["g"].abs().amax())
for name, got, want in (("G·W, gradient scaled by its amax", gx, gv @ wv), ("Gᵀ·X, gradient scaled by its amax", gw, gv.T @ xv)):
    err = ((got.float() - want).norm() / want.norm()).item()
    check(name, err < 5e-3, f"relative difference {err:.2e} from the FP8 values' float32 product")

# 2. medium's head in a mean cross-entropy under bf16 autocast, against the bf16 head.
torch.manual_seed(1)
h = torch.randn(N, C, device=dev).to(torch.bfloat16).requires_grad_()
W = (torch.randn(V, C, device=dev) * 0.02).requires_grad_()
T = torch.randint(0, V, (N,), device=dev)
n_bound = 1 / torch.tensor(float(N), device=dev)
def loss_bf16(h, W): return F.cross_entropy((h @ W.T).float(), T)
def loss_fp8(h, W): return F.cross_entropy(fp8_linear(h, W, n_bound).float(), T)
grads = {}
compiled = (("fp8 compiled", torch.compile(loss_fp8)),) if os.environ.get("FP8_CHECK_COMPILE") else ()
for name, fn in (("bf16", loss_bf16), ("fp8", loss_fp8), *compiled):
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        loss = fn(h, W)
    grads[name] = (loss.item(), *torch.autograd.grad(loss, (h, W)))
for name in [n for n in grads if n != "bf16"]:
    l, a, b = grads[name]
    cos = [F.cosine_similarity(p.float().flatten(), q.float().flatten(), dim=0).item() for p, q in zip((a, b), grads["bf16"][1:])]
    finite = a.isfinite().all().item() and b.isfinite().all().item()
    check(f"medium's head, {name}", finite and abs(l - grads["bf16"][0]) < 0.01 and min(cos) > 0.99,
          f"loss {l:.5f} (bf16 {grads['bf16'][0]:.5f}); gradient cosines {cos[0]:.5f}, {cos[1]:.5f}")
del grads

# 2b. medium's MLP under bf16 autocast: FP8 against bf16.
torch.manual_seed(2)
mlp = SwiGLU(C, H).to(dev)
xm = torch.randn(N, C, device=dev).to(torch.bfloat16).requires_grad_()
res = {}
for on in (False, True):
    mlp.fp8 = on
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        y = mlp(xm)
    res[on] = (y.detach(), *torch.autograd.grad(y.float().square().mean(), (xm, *mlp.parameters())))
cos = [F.cosine_similarity(p.float().flatten(), q.float().flatten(), dim=0).item() for p, q in zip(res[True], res[False])]
check("medium's MLP, fp8", all(t.isfinite().all().item() for t in res[True]) and min(cos) > 0.99,
      "cosines against bf16: output, ∂x, ∂gate, ∂up, ∂down " + ", ".join(f"{c:.4f}" for c in cos))
del res, mlp, xm

# 2c. medium's attention under bf16 autocast: q, k, v and o in FP8 against bf16 (SDPA itself stays bf16).
torch.manual_seed(3)
heads = 16 if dev.type == "cuda" else 4
attn = CausalSelfAttention(C, heads).to(dev)
for p in attn.parameters():
    if p.dim() == 2: torch.nn.init.normal_(p, std=C ** -0.5)          # o_proj too (zero at init: it would test nothing)
T = 2048 if dev.type == "cuda" else 64
xa = torch.randn(N // T, T, C, device=dev).to(torch.bfloat16).requires_grad_()
cos_t, sin_t = (t.to(dev) for t in rope_tables(torch.arange(T), C // heads))
res = {}
for on in (False, True):
    attn.fp8 = on
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        y = attn(xa, cos_t, sin_t)
    res[on] = (y.detach(), *torch.autograd.grad(y.float().square().mean(), (xa, attn.q_proj.weight, attn.k_proj.weight,
                                                                            attn.v_proj.weight, attn.o_proj.weight)))
cos = [F.cosine_similarity(p.float().flatten(), q.float().flatten(), dim=0).item() for p, q in zip(res[True], res[False])]
check("medium's attention, fp8", all(t.isfinite().all().item() for t in res[True]) and min(cos) > 0.98,
      "cosines against bf16: output, ∂x, ∂q, ∂k, ∂v, ∂o " + ", ".join(f"{c:.4f}" for c in cos))
del res, attn, xa

# 3. The products alone (on CUDA): bf16 against FP8, and the FP8 casts and copies, unfused.
if dev.type == "cuda" or os.environ.get("FP8_CHECK_TIME"):   # FP8_CHECK_TIME=1 runs this on a CPU: the code, not the figures
    torch.set_grad_enabled(False)
    def timed(fn, n=20):
        for _ in range(3): fn()
        ts = []
        for _ in range(n):
            sync(dev); t0 = time.perf_counter(); fn(); sync(dev); ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e3
    hb, Wb = h.detach(), W.detach().to(torch.bfloat16)
    G = (torch.randn(N, V, device=dev) / N).to(torch.bfloat16)
    x8, sx = to_fp8(hb, FP8_FORWARD, hb.abs().amax()); w8, sw = to_fp8(Wb, FP8_FORWARD, Wb.abs().amax())
    g8, sg = to_fp8(G, FP8_GRAD, n_bound)
    w8_cols, x8_rows, g8_cols = w8.t().contiguous().t(), x8.t().contiguous(), g8.t().contiguous().t()
    bf16 = {"forward X·Wᵀ": lambda: hb @ Wb.T, "G·W": lambda: G @ Wb, "Xᵀ·G": lambda: hb.T @ G}
    fp8 = {"forward X·Wᵀ": lambda: torch._scaled_mm(x8, w8.t(), scale_a=sx, scale_b=sw, out_dtype=torch.bfloat16, use_fast_accum=True),
           "G·W": lambda: torch._scaled_mm(g8, w8_cols, scale_a=sg, scale_b=sw, out_dtype=torch.bfloat16),
           "Xᵀ·G": lambda: torch._scaled_mm(x8_rows, g8_cols, scale_a=sx, scale_b=sg, out_dtype=torch.float32)}
    flop = 2 * N * C * V
    total = [0.0, 0.0]
    for k in bf16:
        a, b = timed(bf16[k]), timed(fp8[k])
        total[0] += a; total[1] += b
        print(f"        {k:14} bf16 {a:6.2f} ms ({flop / a / 1e9:5.0f} TFLOP/s)   fp8 {b:6.2f} ms ({flop / b / 1e9:5.0f} TFLOP/s)   {a / b:.2f}x")
    casts = timed(lambda: (to_fp8(hb, FP8_FORWARD, hb.abs().amax()), to_fp8(W, FP8_FORWARD, W.abs().amax()),
                           to_fp8(G, FP8_GRAD, n_bound)[0].t().contiguous(), w8.t().contiguous()))
    print(f"        three products: bf16 {total[0]:.2f} ms, fp8 {total[1]:.2f} ms ({total[0] - total[1]:+.2f} ms saved); "
          f"the FP8 casts and copies, unfused: {casts:.2f} ms")
    del G, g8, g8_cols
    # The MLP's nine products per block, in four shapes (M × K by K × N, as fp8_linear runs them): forward X·Wᵀ for gate
    # and up (N, C, H) and down (N, H, C); backward G·W for gate and up (N, H, C) and down (N, C, H); Gᵀ·X for gate and
    # up (H, N, C) and down (C, N, H). Operands: e4m3 forward; e5m2 gradient first in G·W, second in Gᵀ·X.
    blocks = 24 if dev.type == "cuda" else 1
    def products(part, shapes, casts):
        "Time one block's products of `part` in `shapes` (label: ((M, K, N), count, dtype a, dtype b, out dtype, fast accumulation)), bf16 against FP8, then its `casts`; print each, and the sums over `blocks`."
        total = [0.0, 0.0]
        for k, ((m, kk, n), count, da, db, od, fast) in shapes.items():
            a, b = torch.randn(m, kk, device=dev).to(torch.bfloat16), torch.randn(n, kk, device=dev).to(torch.bfloat16)
            a8, b8 = a.to(da), b.to(db).t()                                    # row-major first operand, column-major second
            one = torch.ones((), device=dev)
            t16 = timed(lambda: a @ b.T)
            t8 = timed(lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=od, use_fast_accum=fast))
            total[0] += count * t16; total[1] += count * t8
            print(f"        {part} {k:18} ×{count}  bf16 {t16:6.2f} ms ({2 * m * kk * n / t16 / 1e9:5.0f} TFLOP/s)   "
                  f"fp8 {t8:6.2f} ms ({2 * m * kk * n / t8 / 1e9:5.0f} TFLOP/s)   {t16 / t8:.2f}x")
            del a, b, a8, b8
        c = timed(casts)
        print(f"        {part} products over {blocks} block(s): bf16 {blocks * total[0]:.2f} ms, fp8 {blocks * total[1]:.2f} ms "
              f"({blocks * (total[0] - total[1]):+.2f} ms saved); casts and copies, unfused: {blocks * c:.2f} ms")

    xb, hb2 = torch.randn(N, C, device=dev).to(torch.bfloat16), torch.randn(N, H, device=dev).to(torch.bfloat16)
    def mlp_casts():   # one block's, unfused: X and the hidden product in e4m3 (and transposed for Gᵀ·X), the three gradients in e5m2 by their amax (and transposed)
        x8 = to_fp8(xb, FP8_FORWARD, xb.abs().amax())[0]; h8 = to_fp8(hb2, FP8_FORWARD, hb2.abs().amax())[0]
        x8.t().contiguous(); h8.t().contiguous()
        for g in (xb, hb2, hb2): to_fp8(g, FP8_GRAD, g.abs().amax())[0].t().contiguous()
    products("MLP", {"forward (N, C, H)": ((N, C, H), 2, FP8_FORWARD, FP8_FORWARD, torch.bfloat16, True),
                     "forward (N, H, C)": ((N, H, C), 1, FP8_FORWARD, FP8_FORWARD, torch.bfloat16, True),
                     "G·W (N, H, C)": ((N, H, C), 2, FP8_GRAD, FP8_FORWARD, torch.bfloat16, False),
                     "G·W (N, C, H)": ((N, C, H), 1, FP8_GRAD, FP8_FORWARD, torch.bfloat16, False),
                     "Gᵀ·X (H, N, C)": ((H, N, C), 2, FP8_FORWARD, FP8_GRAD, torch.float32, False),
                     "Gᵀ·X (C, N, H)": ((C, N, H), 1, FP8_FORWARD, FP8_GRAD, torch.float32, False)}, mlp_casts)
    # Attention's twelve products per block: four C × C projections, each forward (N, C, C), G·W (N, C, C) and Gᵀ·X (C, N, C).
    def attn_casts():   # one block's, unfused: X (once for q, k, v) and SDPA's output in e4m3, each transposed too; four gradients in e5m2 by their amax, transposed
        for t in (xb, xb): to_fp8(t, FP8_FORWARD, t.abs().amax())[0].t().contiguous()
        for g in (xb, xb, xb, xb): to_fp8(g, FP8_GRAD, g.abs().amax())[0].t().contiguous()
    products("attention", {"forward (N, C, C)": ((N, C, C), 4, FP8_FORWARD, FP8_FORWARD, torch.bfloat16, True),
                           "G·W (N, C, C)": ((N, C, C), 4, FP8_GRAD, FP8_FORWARD, torch.bfloat16, False),
                           "Gᵀ·X (C, N, C)": ((C, N, C), 4, FP8_FORWARD, FP8_GRAD, torch.float32, False)}, attn_casts)
print("fp8 check:", "all ok" if not failures else f"{len(failures)} FAILED: {', '.join(failures)}")
sys.exit(1 if failures else 0)
