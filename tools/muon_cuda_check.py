"""Compile Muon's elementwise functions one by one on the device, against eager, and print what fails and why.

`CHECK=1 bash tools/gpu_bench.sh` runs it before the benchmark (GPU time is scarce: one call does both); alone:
`PYTHONPATH=. python3 tools/muon_cuda_check.py [cuda|cpu]`. For each function it prints ok (with the largest difference
from the eager form) or the last lines of the compiler's traceback. The foreach forms, which torch 2.11's Inductor failed
to compile on an H200 on 2026-11-26 (`InductorError: AssertionError`, no message) and which compile on the CPU, are
checked too, to show whether that still holds and where it fails.

Then the symmetric products (`medllm.kernels.sym_product`, Triton) against PyTorch's products, Newton–Schulz with them
against float32, and, on a GPU, Newton–Schulz alone on `medium`'s two stacks with PyTorch's products and with the
symmetric ones (both with the fold), and in the Gram form (`gram=True`, 20_optim), and the tile shape the autotuner chose.
Also the compiled momentum kernel dividing by a clipping scale (`grad_scale`), the symmetric product scaled per matrix
(the deferred norm), and the Gram form, X's Gram matrices by the kernel, in float32 (the same iteration) and in bf16 on
a gradient-like stack (as near float64 as the standard iteration)."""
import os, sys, time, traceback, torch

dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else ("cuda" if torch.cuda.is_available() else "cpu"))
if dev.type == "cpu": os.environ["TRITON_INTERPRET"] = "1"   # the symmetric products in Triton's interpreter (13_kernels)
import medllm.optim as O  # noqa: E402
torch.manual_seed(0)
shapes = [(1024, 1024)] * 4 + [(2816, 1024), (1024, 2816)] * 2   # square, tall and wide, as in a block


def foreach_stack(grads, bufs, tall, momentum, nesterov, dtype):   # _momentum_stack before the per-tensor lerps
    O._lerp_momentum(bufs, grads, momentum)
    looks = torch._foreach_lerp(grads, bufs, momentum)
    return torch.stack([(u.mT if t else u).to(dtype) for u, t in zip(looks, tall)])


def inputs(shs=shapes):
    torch.manual_seed(0)
    g = [torch.randn(s, device=dev) for s in shs]; b = [torch.randn(s, device=dev) for s in shs]
    return g, b


def failed(name, e):
    "The error's first line and the traceback's last 14 lines."
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    print(f"FAILED  {name:32} {type(e).__name__}: {first}")
    print("        " + "\n        ".join(traceback.format_exc().strip().splitlines()[-14:]), flush=True)


def results(out, args):
    "What a function produced: its returned tensor, or (in-place functions) every tensor of its list arguments."
    return [out] if isinstance(out, torch.Tensor) else [t for a in args if isinstance(a, list) for t in a]


def check(name, fn, ref, make_args):
    try:
        args_c, args_e = make_args(), make_args()
        got = results(torch.compile(fn, fullgraph=True, dynamic=False)(*args_c), args_c)
        want = results(ref(*args_e), args_e)
        diff = max((x.float() - y.float()).abs().max().item() for x, y in zip(got, want))
        print(f"ok      {name:32} max |compiled - eager| {diff:.2e}", flush=True)
        return True
    except Exception as e:
        failed(name, e)
        return False


def lerp_args():
    g, b = inputs(); return b, g, 0.95


def stack_args():   # one stack: matrices of one (short, long), the tall ones transposed
    shs = shapes[4:]
    g, b = inputs(shs); return g, b, tuple(a > c for a, c in shs), 0.95, True, torch.bfloat16


def update_args():
    torch.manual_seed(1)
    p = [torch.randn(s, device=dev) for s in shapes]
    tall = tuple(a > c for a, c in shapes)
    u = torch.randn(len(shapes), 1024, 1024, device=dev, dtype=torch.bfloat16)
    return p[:4], u[:4], tall[:4], (1.0,) * 4, torch.tensor(0.02, device=dev), 0.1


def update_ref(P, U, tall, scales, lr, wd):
    for p, u, t, s in zip(P, U.unbind(0), tall, scales):
        p.mul_(1 - lr.item() * wd); p.add_(u.float(), alpha=-lr.item() * s)


print(f"torch {torch.__version__} on {dev}", flush=True)
print("the foreach forms (before):")
check("foreach _lerp_momentum", O._lerp_momentum, O._lerp_momentum, lerp_args)
check("foreach _momentum_stack", foreach_stack, O._momentum_stack, stack_args)
print("medllm's compiled path:")
ok = [check("_lerp_each", O._lerp_each, O._lerp_momentum, lerp_args),
      check("_momentum_stack", O._momentum_stack, foreach_stack, stack_args),
      check("_apply_update", O._apply_update, update_ref, update_args),
      check("_momentum_stack, grad_scale", lambda *a: O._momentum_stack(*a[:-1], scale=a[-1]),   # clipping in the kernel
            lambda g, b, *rest: foreach_stack([x / rest[-1] for x in g], b, *rest[:-1]),
            lambda: (*stack_args(), torch.tensor(3.0, device=dev)))]
opt_ok = False
try:   # the whole compiled Muon, two steps, against eager
    ws = {}
    for compiled in (False, True):
        torch.manual_seed(2)
        W = [torch.nn.Parameter(torch.randn(s, device=dev)) for s in shapes]
        opt = O.Muon(W, lr=0.02, weight_decay=0.1, compiled=compiled)
        for _ in range(2):
            for w in W: w.grad = torch.randn_like(w)
            opt.step()
        ws[compiled] = W
    d = max((a - b).abs().max().item() for a, b in zip(ws[False], ws[True]))
    print(f"ok      Muon(compiled=True), 2 steps     max |compiled - eager| {d:.2e}"); opt_ok = True
except Exception as e:
    failed("Muon(compiled=True)", e)
skip_ok = False
try:   # fit --nonfinite skip on the device: NaN gradients and found_inf set leave fused AdamW and the compiled Muon as they were
    from medllm.model import GPT, get_config
    m = GPT(get_config("nano", vocab_size=256, n_layer=2)).to(dev)
    o = O.build_optimizer(m, "muon", muon_impl="compiled", fused=True)
    for flag in (None, torch.ones((), device=dev)):
        for p in m.parameters(): p.grad = torch.randn_like(p) if flag is None else torch.full_like(p, float("nan"))
        if flag is not None: before = [t.clone() for t in [*m.parameters(), *(v for x in o.opts.values() for st in x.state.values() for v in st.values() if torch.is_tensor(v))]]
        o.step(found_inf=flag)
    after = [*m.parameters(), *(v for x in o.opts.values() for st in x.state.values() for v in st.values() if torch.is_tensor(v))]
    skip_ok = all(torch.equal(a, b) for a, b in zip(before, after))
    print(("ok      " if skip_ok else "FAILED  ") + f"found_inf: fused AdamW and the compiled Muon left {len(after)} tensors as they were", flush=True)
except Exception as e:
    failed("found_inf", e)
print("compiled Muon:", "works" if all(ok) and opt_ok and skip_ok else "FAILS", flush=True)


print("symmetric products (medllm.kernels.sym_product, Triton):", flush=True)
sym_ok = False
try:
    from medllm.kernels import sym_product
    a, b, c = O.NS_COEFFICIENTS
    rel = lambda x, ref: ((x.float() - ref).norm() / ref.norm()).item()
    k, m, n = (8, 1024, 2816) if dev.type == "cuda" else (2, 72, 200)   # the interpreter is slow
    torch.manual_seed(3)
    X = torch.randn(k, m, n, device=dev, dtype=torch.bfloat16)
    A, ref = sym_product(X), X.float() @ X.float().mT
    err_a, torch_a = rel(A, ref), rel(X @ X.mT, ref)
    Bm = sym_product(A, A, alpha=c, beta=b, diag=a)
    refB = a * torch.eye(m, device=dev) + b * A.float() + c * A.float() @ A.float()
    err_b, torch_b = rel(Bm, refB), rel((a * torch.eye(m, device=dev) + torch.baddbmm(A, A, A, beta=b, alpha=c)).bfloat16(), refB)
    sc = torch.rand(k, device=dev) + 0.5                               # a factor per matrix (the deferred norm)
    err_s = rel(sym_product(X, scale=sc), sc[:, None, None] * ref)
    mirrored = torch.equal(A, A.mT) and torch.equal(Bm, Bm.mT)
    print(f"        X Xᵀ {tuple(X.shape)}: distance from float32 {err_a:.2e} (PyTorch's bf16 product {torch_a:.2e}); "
          f"a·I + b·A + c·A²: {err_b:.2e} ({torch_b:.2e}); scaled per matrix: {err_s:.2e}; "
          f"mirrored exactly: {mirrored}", flush=True)
    G = torch.randn(4 if dev.type == "cuda" else 2, m, n, device=dev)
    nsref = O.newton_schulz(G, dtype=torch.float32)
    ns = {s_: rel(O.newton_schulz(G, fold=True, symmetric=s_), nsref) for s_ in (False, True)}
    print(f"        Newton–Schulz (bf16, fold), distance from float32: {ns[False]:.2%} PyTorch's products, {ns[True]:.2%} symmetric", flush=True)
    gram32 = rel(O.newton_schulz(G, dtype=torch.float32, symmetric=True, gram=True), nsref)   # the same iteration in float32
    kg = G.size(0)                                                     # gradient-like: singular values over three decades
    U, V = torch.linalg.qr(torch.randn(kg, m, m, device=dev))[0], torch.linalg.qr(torch.randn(kg, n, m, device=dev))[0]
    Gg = U @ torch.diag_embed(torch.logspace(0, -3, m, device=dev).expand(kg, m)) @ V.mT
    ref64 = O.newton_schulz(Gg.double(), dtype=torch.float64)
    gram_bf = {gm: rel(O.newton_schulz(Gg, fold=True, symmetric=True, gram=gm).double(), ref64) for gm in (False, True)}
    top = torch.linalg.svdvals(O.newton_schulz(Gg, symmetric=True, gram=True).double()).max().item()
    print(f"        Gram form: float32 {gram32:.1e} from the standard iteration; bf16 on a gradient-like stack, distance from "
          f"float64 {gram_bf[True]:.2%} (standard, symmetric {gram_bf[False]:.2%}), largest singular value {top:.3f}", flush=True)
    sym_ok = (mirrored and err_a < 2.5 * torch_a and err_s < 2.5 * torch_a and err_b < 2.5 * max(torch_b, 1e-3) and ns[True] < 1.2 * ns[False]
              and gram32 < 1e-4 and top < 1.3 and gram_bf[True] < 1.2 * gram_bf[False])
    print(("ok      " if sym_ok else "FAILED  ") + "sym_product against PyTorch", flush=True)
    if dev.type == "cuda":   # Newton–Schulz alone on medium's stacks (96 of 1024x1024, 72 of 1024x2816), with the fold
        stacks = [torch.randn(96, 1024, 1024, device=dev, dtype=torch.bfloat16), torch.randn(72, 1024, 2816, device=dev, dtype=torch.bfloat16)]
        for name, kw in (("PyTorch products", {}), ("symmetric products", dict(symmetric=True)),
                         ("symmetric products, Gram form", dict(symmetric=True, gram=True))):
            for _ in range(3): [O.newton_schulz(S, fold=True, **kw) for S in stacks]
            torch.cuda.synchronize(); t0 = time.perf_counter()
            for _ in range(10): [O.newton_schulz(S, fold=True, **kw) for S in stacks]
            torch.cuda.synchronize()
            print(f"        Newton–Schulz on medium's 168 matrices, fold, {name}: {(time.perf_counter() - t0) / 10 * 1e3:.2f} ms", flush=True)
        for S in stacks:   # what --muon_impl auto times, and would choose, on the same stacks
            t = O.time_ns_forms(S, O.ns_forms_for(S.size(1), S.size(2), dev))
            print(f"        auto on {tuple(S.shape)}: " + ", ".join(f"{f} {s * 1e3:.2f} ms" for f, s in t.items()) + f" -> {min(t, key=t.get)}", flush=True)
        import medllm.kernels as K
        print("        autotuned tiles:", {str(key): str(cfg) for key, cfg in K._sym_tuned.cache.items()}, flush=True)
except Exception as e:
    failed("sym_product", e)
print("symmetric products:", "work" if sym_ok else "FAIL", flush=True)
