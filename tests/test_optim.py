"""Optimizers from outside: Muon against torch.optim.Muon, parameter groups, schedules, state round trip."""
import copy
import math
import os
from pathlib import Path

import pytest
import torch

from medllm.model import GPT, get_config
from medllm.optim import MUON_IMPLS, Muon, build_optimizer, lr_multiplier, newton_schulz


def test_newton_schulz_orthogonalises():
    torch.manual_seed(0)
    for shape in [(64, 32), (32, 64), (40, 40)]:
        G = torch.randn(*shape)
        sv = torch.linalg.svdvals(newton_schulz(G).float())
        # all but the few smallest singular values land near 1 (a square Gaussian matrix has some near 0)
        assert 0.5 < sv[: int(0.9 * len(sv))].min() and sv.max() < 1.3, (shape, sv.min(), sv.max())
    with pytest.raises(ValueError, match="2-D"):
        newton_schulz(torch.randn(2, 2, 3, 4))


def test_stacked_newton_schulz_equals_one_matrix_at_a_time():
    torch.manual_seed(0)
    for shape in [(6, 64, 32), (3, 32, 64), (4, 40, 40)]:
        G = torch.randn(*shape)
        X = newton_schulz(G, dtype=torch.float32)
        for g, x in zip(G, X): torch.testing.assert_close(x, newton_schulz(g, dtype=torch.float32), rtol=1e-4, atol=1e-5)


def test_gram_form_is_the_same_iteration():
    """newton_schulz(gram=True): in float64 the standard iteration, to rounding, for stacks, one matrix and tall ones, at
    any number of steps; matrices less than twice as wide as tall keep the standard iteration, bit for bit; in bf16, on a
    gradient-like stack (singular values over three decades), as near float64 as the standard iteration, with no singular
    value blown up (the Gram form without X formed midway reaches 3.4 here: 20_optim)."""
    torch.manual_seed(0)
    for G in (torch.randn(3, 20, 64), torch.randn(20, 64), torch.randn(2, 64, 20)):
        for steps in (1, 2, 3, 5, 6):
            torch.testing.assert_close(newton_schulz(G, steps, dtype=torch.float64, gram=True), newton_schulz(G, steps, dtype=torch.float64),
                                       rtol=1e-10, atol=1e-12)
    G = torch.randn(2, 40, 70)
    assert torch.equal(newton_schulz(G, gram=True), newton_schulz(G))
    k, m, n = 4, 128, 352
    U, V = torch.linalg.qr(torch.randn(k, m, m))[0], torch.linalg.qr(torch.randn(k, n, m))[0]
    G = U @ torch.diag_embed(torch.logspace(0, -3, m).expand(k, m)) @ V.mT
    ref = newton_schulz(G.double(), dtype=torch.float64)
    dist = {gram: ((newton_schulz(G, gram=gram).double() - ref).norm() / ref.norm()).item() for gram in (False, True)}
    assert dist[True] < 1.2 * dist[False], dist
    assert torch.linalg.svdvals(newton_schulz(G, gram=True).double()).max() < 1.05 * torch.linalg.svdvals(ref).max()


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon appeared in torch 2.9")
def test_muon_matches_torch_muon():
    torch.manual_seed(1)
    shapes = [(96, 32), (32, 96), (50, 50), (96, 32), (50, 50), (50, 50)]   # repeated shapes take the batched path
    W = [torch.randn(*s, requires_grad=True) for s in shapes]
    W2 = [w.detach().clone().requires_grad_() for w in W]
    ours = Muon(W, lr=0.03, weight_decay=0.05, momentum=0.9)
    ref = torch.optim.Muon(W2, lr=0.03, weight_decay=0.05, momentum=0.9, nesterov=True)
    for _ in range(20):
        for w, w2 in zip(W, W2):
            g = torch.randn_like(w)
            w.grad, w2.grad = g.clone(), g.clone()
        ours.step(); ref.step()
    for w, w2 in zip(W, W2):
        torch.testing.assert_close(w, w2, rtol=0, atol=0)  # the same arithmetic: bitwise


def test_groups_cover_every_parameter_once():
    m = GPT(get_config("nano", vocab_size=512, n_layer=2))
    for kind in ("muon", "adamw"):
        opt = build_optimizer(m, kind)
        ids = [id(p) for g in opt.param_groups for p in g["params"]]
        assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    muon = build_optimizer(m).opts["muon"]
    assert all(p.ndim == 2 and p is not m.embed.weight and p is not m.lm_head.weight for g in muon.param_groups for p in g["params"])


def test_optimizer_state_round_trip_continues_identically():
    torch.manual_seed(0)
    m = GPT(get_config("nano", vocab_size=256, n_layer=1))
    opt = build_optimizer(m)
    x = torch.randint(0, 256, (2, 16))
    for _ in range(3):
        m(x, x).backward(); opt.step(); opt.zero_grad()
    m2 = GPT(get_config("nano", vocab_size=256, n_layer=1)); m2.load_state_dict(m.state_dict())
    opt2 = build_optimizer(m2); opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as if read from a file: no aliasing
    for mm, oo in ((m, opt), (m2, opt2)):
        oo.set_lr_multiplier(0.5); mm(x, x).backward(); oo.step(); oo.zero_grad()
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_schedules():
    assert [round(lr_multiplier(s, 10, 2), 3) for s in range(10)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5]
    assert lr_multiplier(0, 100, 0, "cosine") == 1.0 and abs(lr_multiplier(50, 100, 0, "cosine") - 0.5) < 0.02
    assert lr_multiplier(99, 100, 0, "wsd", min_ratio=0.1) == pytest.approx(1 - 0.9 * 19 / 20)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_multiplier(0, 1, schedule="step")


def test_sharded_muon_under_torchrun_equals_replicated():
    "Two torchrun processes: each orthogonalises its share of the matrices (4 + 4 of 8, three steps), and the result is bitwise the same, eager, compiled, with the symmetric products (in Triton's interpreter), in the Gram form, and with each shape's form chosen by timing (`auto`, the ranks' times summed, so ranks that alone would choose differently choose alike); the ranks' momentum buffers agree too."
    import socket
    import subprocess
    from conftest import BIN
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    r = subprocess.run([str(BIN / "torchrun"), "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={port}",
                        str(Path(__file__).parent / "dist_muon.py")], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "TRITON_INTERPRET": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    import re
    got = sorted(re.findall(r"rank (\d): (\w+): matrices orthogonalised sharded (\d+) replicated (\d+)", r.stdout))   # lines may interleave
    assert got == [(rank, impl, "12", "24") for rank in "01" for impl in ("auto", "compiled", "compiled_gram", "compiled_sym", "eager")], r.stdout


def test_muon_impls_agree_with_eager():
    """compiled (Inductor's rounding), compiled_fold (a·X folded into Newton–Schulz's product) and compiled_gram (the wide
    matrices' iterations in the Gram form, PyTorch's products off CUDA) move the weights as eager does, within bf16
    noise. Full-rank gradients: a low-rank one (a tiny batch) has directions that are rounding noise, which Newton–Schulz
    scales up to the size of the others, in every implementation differently."""
    m = GPT(get_config("nano", vocab_size=256, n_layer=1))
    cpu_impls = [i for i in MUON_IMPLS if i != "compiled_sym"]   # compiled_sym: CUDA, or the interpreter (the test below)
    flags = {impl: (lambda o: (o.compiled, o.ns_fold, o.ns_symmetric, o.ns_gram, o.ns_auto))(build_optimizer(m, muon_impl=impl).opts["muon"]) for impl in cpu_impls}
    assert flags == {"eager": (False, False, False, False, False), "compiled": (True, False, False, False, False), "compiled_fold": (True, True, False, False, False),
                     "compiled_gram": (True, True, False, True, False),   # compiled_gram off CUDA: the Gram form with PyTorch's products
                     "auto": (True, False, False, False, True)}          # auto: the three flags unused, each shape's form timed
    with pytest.raises(ValueError, match="unknown muon_impl"): build_optimizer(m, muon_impl="fused")
    if os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(ValueError, match="compiled_sym runs a Triton kernel on a CUDA GPU"): build_optimizer(m, muon_impl="compiled_sym")
    torch.manual_seed(0)
    W0 = [torch.randn(*s) for s in ((64, 32), (32, 64), (64, 32), (48, 48), (48, 48))]
    grads = [[torch.randn_like(w) for w in W0] for _ in range(4)]
    final = {}
    for impl in cpu_impls:
        W = [w.clone().requires_grad_() for w in W0]
        opt = Muon(W, weight_decay=0.1, compiled=impl != "eager", ns_fold=impl == "compiled_fold", ns_gram=impl == "compiled_gram",
                   ns_auto=impl == "auto")
        for step, gs in enumerate(grads):
            for w, g in zip(W, gs): w.grad = g.clone()
            for group in opt.param_groups: group["lr"] = 0.02 * (1 - step / 8)
            opt.step()
        final[impl] = W
    for impl in ("compiled", "compiled_fold", "compiled_gram", "auto"):   # (64, 32) and (32, 64): the Gram form's aspect, 2
        gap = [((a - b).norm() / (b - w0).norm()).item() for a, b, w0 in zip(final[impl], final["eager"], W0)]
        assert max(gap) < (0.01 if impl == "compiled" else 0.05), (impl, gap)


def test_muon_auto_takes_the_fastest_form_and_keeps_it(monkeypatch):
    """`muon_impl auto` (20_optim): each shape's form is the one its timing says is fastest, among the forms that run
    here (no symmetric kernel off CUDA; the Gram form only for wide matrices); the step is then bitwise the step of that
    fixed form; the choice is timed once, saved in the state dict and kept by a resumed run; a saved form that cannot
    run here (the symmetric kernel, saved on a GPU) is chosen afresh; a non-auto Muon ignores a saved choice."""
    from medllm import optim
    from medllm.optim import ns_form_kwargs, ns_forms_for
    cpu = torch.device("cpu")
    assert ns_forms_for(32, 64, cpu) == ("fold", "gram") and ns_forms_for(48, 48, cpu) == ("fold",) and ns_forms_for(32, 63, cpu) == ("fold",)
    assert ns_form_kwargs("gram", cpu) == dict(fold=True, symmetric=False, gram=True)
    with pytest.raises(ValueError, match="unknown Newton–Schulz form 'fast'"): ns_form_kwargs("fast", cpu)
    timings = []
    def fake(X, forms, *a, **k):                          # the Gram form fastest for the first Muon, the plain one after
        timings.append((tuple(X.shape), forms))
        return {"fold": 2.0, "gram": 1.0} if len(timings) == 1 else {"fold": 1.0, "gram": 2.0}
    monkeypatch.setattr(optim, "time_ns_forms", fake)
    torch.manual_seed(0)
    W0 = [torch.randn(*s) for s in ((64, 32), (32, 64), (48, 48))]
    grads = [[torch.randn_like(w) for w in W0] for _ in range(3)]
    def run(state=None, **kw):
        W = [w.clone().requires_grad_() for w in W0]
        opt = Muon(W, compiled=True, **kw)
        if state: opt.load_state_dict(state)
        for gs in grads:
            for w, g in zip(W, gs): w.grad = g.clone()
            opt.step()
        return W, opt
    W_auto, opt = run(ns_auto=True)
    assert opt.ns_choice == {"32x64": "gram", "48x48": "fold"} and timings == [((2, 32, 64), ("fold", "gram"))]   # timed once
    W_gram, _ = run(ns_fold=True, ns_gram=True)
    assert all(torch.equal(a, b) for a, b in zip(W_auto, W_gram))
    state = opt.state_dict()
    assert state["ns_choice"] == {"32x64": "gram", "48x48": "fold"}
    _, resumed = run(state, ns_auto=True)
    assert resumed.ns_choice == state["ns_choice"] and len(timings) == 1   # kept, not timed again
    _, moved = run({**state, "ns_choice": {"32x64": "sym", "48x48": "sym"}}, ns_auto=True)
    assert moved.ns_choice == {"32x64": "fold", "48x48": "fold"} and len(timings) == 2   # no kernel on the CPU: chosen afresh
    _, plain = run(state, ns_fold=True)
    assert plain.ns_choice == {} and "ns_choice" not in plain.state_dict()


SYM_SCRIPT = r"""
import torch
from medllm.kernels import sym_product
from medllm.model import GPT, get_config
from medllm.optim import Muon, build_optimizer, newton_schulz
torch.manual_seed(0)
rel = lambda x, ref: ((x.float() - ref).norm() / ref.norm()).item()
for shape in ((37, 50), (3, 70, 150), (2, 33, 20)):       # one matrix; stacks with a part-filled last tile
    for dt, tol in ((torch.float32, 1e-6), (torch.bfloat16, 4e-3)):
        X = torch.randn(*shape, dtype=dt)
        A = sym_product(X)
        assert A.dtype == dt and torch.equal(A, A.mT) and rel(A, X.float() @ X.float().mT) < tol, (shape, dt)
        B = sym_product(A, A, alpha=-4.775, beta=2.0315, diag=3.4445)
        ref = 3.4445 * torch.eye(shape[-2]) + 2.0315 * A.float() - 4.775 * A.float() @ A.float()
        assert torch.equal(B, B.mT) and rel(B, ref) < tol, (shape, dt)
Xt = torch.randn(2, 40, 30).mT                              # not contiguous
assert rel(sym_product(Xt), Xt @ Xt.mT) < 1e-6
for bad, msg in ((lambda: sym_product(torch.randn(2, 2, 3, 3)), "matrix or a stack"),
                 (lambda: sym_product(torch.randn(2, 4, 6), torch.randn(2, 4, 5)), "expected")):
    try: bad(); raise AssertionError(msg)
    except ValueError as e: assert msg in str(e), e
G = torch.randn(3, 48, 80)
for fold in (False, True):
    torch.testing.assert_close(newton_schulz(G, dtype=torch.float32, fold=fold, symmetric=True), newton_schulz(G, dtype=torch.float32, fold=fold), rtol=1e-4, atol=1e-5)
for G1 in (torch.randn(3, 24, 80), torch.randn(24, 60).mT):   # the Gram form, X's Gram matrices by the kernel: the same iteration
    torch.testing.assert_close(newton_schulz(G1, dtype=torch.float32, symmetric=True, gram=True), newton_schulz(G1, dtype=torch.float32), rtol=1e-4, atol=1e-5)
o = build_optimizer(GPT(get_config("nano", vocab_size=256, n_layer=1)), muon_impl="compiled_sym").opts["muon"]
assert (o.compiled, o.ns_fold, o.ns_symmetric) == (True, True, True)
torch.manual_seed(0)                                        # four steps under a schedule, against eager (as the test above)
W0 = [torch.randn(*s) for s in ((64, 32), (32, 64), (64, 32), (48, 48), (48, 48))]
grads = [[torch.randn_like(w) for w in W0] for _ in range(4)]
final = {}
for impl in ("eager", "sym", "gram"):                        # compiled_sym, and compiled_gram as on CUDA (with the kernel)
    W = [w.clone().requires_grad_() for w in W0]
    c = impl != "eager"
    opt = Muon(W, weight_decay=0.1, compiled=c, ns_fold=c, ns_symmetric=c, ns_gram=impl == "gram")
    for step, gs in enumerate(grads):
        for w, g in zip(W, gs): w.grad = g.clone()
        for group in opt.param_groups: group["lr"] = 0.02 * (1 - step / 8)
        opt.step()
    final[impl] = W
gaps = {impl: max(((a - b).norm() / (b - w0).norm()).item() for a, b, w0 in zip(final[impl], final["eager"], W0)) for impl in ("sym", "gram")}
assert max(gaps.values()) < 0.05, gaps
print("ok", gaps)
"""


def test_symmetric_products_in_triton_interpreter():
    """`sym_product` (13_kernels) in Triton's interpreter on the CPU: X Xᵀ and a·I + b·A + c·A² against PyTorch, mirrored
    exactly, for a matrix, stacks with part-filled tiles and a transposed input; bad shapes are refused; Newton–Schulz with it equals
    PyTorch's in float32, in the standard and the Gram form; `--muon_impl compiled_sym`, and `compiled_gram` as it runs on
    CUDA (with the kernel), move the weights as eager Muon does, within bf16 noise. In its own process: the interpreter must be chosen before Triton is imported."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", SYM_SCRIPT], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "2"})
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-3000:]


def test_newton_schulz_forms_benchmark_runs(tmp_path):
    """benchmarks/newton_schulz_forms.py on a small stack and on a checkpoint's momentum buffers (one saved by
    `save_checkpoint` after a Muon step, as `fit` saves them): both forms timed, each one's distance from float64; a shape
    the Gram form does not take is refused in one line, exit code 2."""
    import subprocess
    import sys
    from medllm.checkpoint import save_checkpoint
    m = GPT(get_config("nano", vocab_size=256, n_layer=1))
    opt = build_optimizer(m)
    x = torch.randint(0, 256, (2, 16))
    m(x, x).backward(); opt.step()
    path = save_checkpoint(tmp_path, 1, {"optimizer": opt.state_dict()})
    script = Path(__file__).parents[1] / "benchmarks" / "newton_schulz_forms.py"
    r = subprocess.run([sys.executable, str(script), "--shape", "2,16,40", "--rounds", "1", "--checkpoint", str(path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [l for l in r.stdout.splitlines() if "x the standard form" in l]
    assert [l.split()[0] for l in lines] == ["standard", "gram"], r.stdout
    assert all("on the checkpoint's 3 wide momentum buffers" in l for l in lines), r.stdout   # nano's gate, up, down
    bad = subprocess.run([sys.executable, str(script), "--shape", "2,16,20"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "n >= 2m" in bad.stderr and "Traceback" not in bad.stderr
