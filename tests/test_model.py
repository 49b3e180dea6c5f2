"""The blocks and the GPT from outside: references, RoPE properties, causality, init loss, counts, generation."""
import math

import pytest
import torch
import torch.nn.functional as F

from medllm.layers import (FP8_FORWARD, FP8_GRAD, CausalSelfAttention, KVCache, ReLU2MLP, RMSNorm, SwiGLU, apply_rope, fp8_linear,
                           linear_cross_entropy, rope_tables, softcap, to_fp8)
from medllm.model import GPT, ModelConfig, generate, get_config, pad_vocab


def test_rmsnorm_matches_torch_reference():
    n = RMSNorm(64)
    with torch.no_grad(): n.weight.uniform_(0.5, 2.0)
    x = torch.randn(4, 9, 64) * 3
    torch.testing.assert_close(n(x), F.rms_norm(x, (64,), n.weight, 1e-6))


def test_rope_properties():
    D = 32
    cos, sin = rope_tables(torch.arange(2048), D)
    x = torch.randn(1, 1, 1, D)
    torch.testing.assert_close(apply_rope(x, cos[:1], sin[:1]), x)  # position 0: identity
    q, k = torch.randn(1, 1, 1, D), torch.randn(1, 1, 1, D)
    dots = [(apply_rope(q, cos[m:m + 1], sin[m:m + 1]) * apply_rope(k, cos[m - 7:m - 6], sin[m - 7:m - 6])).sum().item()
            for m in (7, 50, 900, 2000)]
    assert max(dots) - min(dots) < 1e-3 * max(1.0, abs(dots[0]))  # depends on the offset only
    seq = torch.randn(1, 2, 10, D)
    full = apply_rope(seq, cos[:10], sin[:10])
    torch.testing.assert_close(apply_rope(seq[:, :, 4:], *rope_tables(torch.arange(4, 10), D)), full[:, :, 4:])
    with pytest.raises(ValueError, match="even"):
        rope_tables(torch.arange(3), 7)


def test_attention_matches_naive_masked_softmax():
    torch.manual_seed(0)
    a = CausalSelfAttention(48, 6)
    x = torch.randn(3, 11, 48)
    cos, sin = rope_tables(torch.arange(11), 8)
    B, T, C = x.shape
    q = apply_rope(a.q_norm(a.q_proj(x).view(B, T, 6, 8)).transpose(1, 2), cos, sin)
    k = apply_rope(a.k_norm(a.k_proj(x).view(B, T, 6, 8)).transpose(1, 2), cos, sin)
    v = a.v_proj(x).view(B, T, 6, 8).transpose(1, 2)
    s = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    ref = a.o_proj((s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C))
    torch.testing.assert_close(a(x, cos, sin), ref, atol=1e-5, rtol=1e-5)


def test_mlps_match_their_formulas():
    torch.manual_seed(0)
    x = torch.randn(5, 32)
    sw = SwiGLU(32, 96)
    torch.testing.assert_close(sw(x), (F.silu(x @ sw.gate_proj.weight.T) * (x @ sw.up_proj.weight.T)) @ sw.down_proj.weight.T)
    r2 = ReLU2MLP(32, 128)
    torch.testing.assert_close(r2(x), torch.relu(x @ r2.up_proj.weight.T).square() @ r2.down_proj.weight.T)


@pytest.mark.parametrize("cap,chunk", [(0.0, 7), (0.0, 1000), (10.0, 16)])
def test_fused_cross_entropy_matches_naive(cap, chunk):
    torch.manual_seed(1)
    h = torch.randn(2, 50, 24, requires_grad=True)
    w = torch.randn(300, 24, requires_grad=True)
    t = torch.randint(0, 300, (2, 50)); t[0, :5] = -1
    naive = F.cross_entropy(softcap(h @ w.T, cap).view(-1, 300), t.view(-1), ignore_index=-1)
    fused = linear_cross_entropy(h, w, t, cap, chunk)
    torch.testing.assert_close(fused, naive)
    for a, b in zip(torch.autograd.grad(fused * 3.0, (h, w)), torch.autograd.grad(naive * 3.0, (h, w))):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, t, cap, chunk), naive)


def test_fused_cross_entropy_under_bf16_autocast():
    torch.manual_seed(2)
    h = torch.randn(64, 32, requires_grad=True)
    w = torch.randn(500, 32, requires_grad=True)
    t = torch.randint(0, 500, (64,))
    with torch.autocast("cpu", torch.bfloat16):
        fused = linear_cross_entropy(h, w, t, chunk=16)
        naive = F.cross_entropy((h @ w.T).float(), t)
    torch.testing.assert_close(fused, naive)
    for a, b in zip(torch.autograd.grad(fused, (h, w)), torch.autograd.grad(naive, (h, w))):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-2)


def _fp8_value(t, dtype, amax=None):
    "What the FP8 number `t` rounds to stands for, back in float32 (scaled by `amax`, by default t's own largest entry)."
    q, s = to_fp8(t, dtype, t.abs().amax() if amax is None else amax)
    return q.float() * s


def test_fp8_linear_is_the_product_of_the_rounded_operands():
    """fp8_linear's forward product and both backward products are the float32 products of the FP8 values the operands
    round to (x and w by their amax, the output's gradient by `grad_bound` into e5m2), rescaled: checked against that
    arithmetic written out, on a gradient captured where fp8_linear receives it."""
    torch.manual_seed(3)
    x = torch.randn(2, 32, 64, requires_grad=True); w = (torch.randn(512, 64) * 0.05).requires_grad_()
    t = torch.randint(0, 512, (2, 32)); t[0, :7] = -1
    bound = 1 / (t != -1).sum()
    seen = {}
    out = fp8_linear(x, w, bound)
    out.register_hook(lambda g: seen.setdefault("grad", g))
    loss = F.cross_entropy(out.float().flatten(0, 1), t.flatten(), ignore_index=-1)
    gx, gw = torch.autograd.grad(loss, (x, w))
    x2 = x.detach().flatten(0, 1)
    xv, wv = _fp8_value(x2, FP8_FORWARD), _fp8_value(w.detach(), FP8_FORWARD)
    gv = _fp8_value(seen["grad"].flatten(0, 1), FP8_GRAD, bound)
    torch.testing.assert_close(out.detach().flatten(0, 1), xv @ wv.T, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx.flatten(0, 1), gv @ wv, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(gw, gv.T @ xv, rtol=1e-5, atol=1e-9)
    assert 0.5 * bound < seen["grad"].abs().max() <= bound   # the bound is tight: the scale wastes at most one binade
    ref = F.cross_entropy((x @ w.T).flatten(0, 1), t.flatten(), ignore_index=-1)   # and near the float32 head
    assert abs(loss.item() - ref.item()) < 5e-3
    for a, b in zip((gx, gw), torch.autograd.grad(ref, (x, w))):
        assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999 and (a - b).norm() < 0.05 * b.norm()


def test_fp8_linear_under_bf16_autocast_and_past_its_bound():
    torch.manual_seed(4)
    x = torch.randn(64, 32, requires_grad=True); w = (torch.randn(256, 32) * 0.05).requires_grad_()
    t = torch.randint(0, 256, (64,))
    with torch.autocast("cpu", torch.bfloat16):
        out = fp8_linear(x.to(torch.bfloat16), w, torch.tensor(1 / 64))
        loss = F.cross_entropy(out.float(), t)
    assert out.dtype == torch.bfloat16                                  # what nn.Linear gives under autocast
    gx, gw = torch.autograd.grad(1e4 * loss, (x, w))                     # 10,000 times past the bound: saturated, not inf
    assert gx.dtype == gw.dtype == torch.float32 and gx.isfinite().all() and gw.isfinite().all()
    with pytest.raises(ValueError, match="multiple of 16"): fp8_linear(torch.randn(10, 32), w, torch.tensor(1.0))


def test_fp8_head_in_the_model_trains_only():
    "GPT.fp8_head: a training loss within FP8's precision of the float32 head's; without gradients, the float32 head exactly."
    torch.manual_seed(5)
    m = GPT(get_config("nano", vocab_size=512)); m.loss_impl = "full"
    with torch.no_grad(): m.lm_head.weight.normal_(std=0.05)
    idx = torch.randint(0, 512, (2, 32))
    ref = m(idx, idx)
    m.fp8_head = True
    ours = m(idx, idx)
    assert ours.item() != ref.item() and abs(ours.item() - ref.item()) < 0.01
    with torch.no_grad(): assert m(idx, idx).item() == ref.item()
    m.eval(); assert m(idx, idx).item() == ref.item()


def test_fp8_linear_without_a_bound_scales_the_gradient_by_its_largest_entry():
    """grad_bound=None (the MLP's products): the output's gradient is scaled by its own amax, so its largest entry lands
    on e5m2's largest value, and G·W and Gᵀ·X are the products of the FP8 values, as with a bound."""
    torch.manual_seed(6)
    x = torch.randn(48, 32, requires_grad=True); w = torch.randn(80, 32).requires_grad_()
    seen = {}
    out = fp8_linear(x, w)
    out.register_hook(lambda g: seen.setdefault("grad", g))
    g_out = torch.randn(48, 80) * 3e-5                                   # far below 1: an amax scale, not a fixed one
    gx, gw = torch.autograd.grad(out, (x, w), g_out)
    g = seen["grad"]
    q, s = to_fp8(g, FP8_GRAD, g.abs().amax())
    assert q.float().abs().max().item() == torch.finfo(FP8_GRAD).max
    gv, xv, wv = _fp8_value(g, FP8_GRAD), _fp8_value(x.detach(), FP8_FORWARD), _fp8_value(w.detach(), FP8_FORWARD)
    torch.testing.assert_close(gx, gv @ wv, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(gw, gv.T @ xv, rtol=1e-5, atol=1e-12)
    assert (gx - g_out @ w.detach()).norm() < 0.08 * (g_out @ w.detach()).norm()   # near the float32 gradient


@pytest.mark.parametrize("mlp", ["swiglu", "relu2"])
def test_fp8_mlp_in_the_model_trains_only(mlp):
    """GPT.fp8_mlp: every block's MLP in FP8 while training (a loss near the plain one, a finite gradient for every
    tensor); without gradients or in eval(), the plain products exactly; off again, the plain training loss exactly."""
    m = _randomised(get_config("nano", vocab_size=512, mlp=mlp), seed=7)
    idx = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(7))
    ref = m(idx, idx)
    m.fp8_mlp = True
    assert m.fp8_mlp and all(b.mlp.fp8 for b in m.blocks)
    ours = m(idx, idx)
    ours.backward()
    assert ours.item() != ref.item() and abs(ours.item() - ref.item()) < 0.05, (ours.item(), ref.item())
    assert all(p.grad is not None and p.grad.isfinite().all() for p in m.parameters())
    with torch.no_grad(): assert m(idx, idx).item() == ref.item()
    m.eval(); assert m(idx, idx).item() == ref.item(); m.train()
    m.fp8_mlp = False
    assert not any(b.mlp.fp8 for b in m.blocks) and m(idx, idx).item() == ref.item()


def test_fp8_attn_in_the_model_trains_only():
    """GPT.fp8_attn: every block's q, k, v, o projections in FP8 while training, grouped heads included (a loss near the
    plain one, a finite gradient for every tensor, the MLPs left alone); without gradients, the plain products exactly."""
    m = _randomised(get_config("nano", vocab_size=512, n_kv_head=2), seed=3)
    idx = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(3))
    ref = m(idx, idx)
    m.fp8_attn = True
    assert m.fp8_attn and all(b.attn.fp8 for b in m.blocks) and not any(b.mlp.fp8 for b in m.blocks)
    ours = m(idx, idx)
    ours.backward()
    assert ours.item() != ref.item() and abs(ours.item() - ref.item()) < 0.05, (ours.item(), ref.item())
    assert all(p.grad is not None and p.grad.isfinite().all() for p in m.parameters())
    with torch.no_grad(): assert m(idx, idx).item() == ref.item()
    m.fp8_attn = False
    assert not any(b.attn.fp8 for b in m.blocks) and m(idx, idx).item() == ref.item()


def _randomised(cfg: ModelConfig, seed=0) -> GPT:
    torch.manual_seed(seed)
    m = GPT(cfg)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2 and not p.any(): p.normal_(std=0.05)  # wake the zero-initialised projections
    return m


@pytest.mark.parametrize("mlp,qk_norm,cap", [("swiglu", True, 0.0), ("relu2", False, 30.0)])
def test_model_is_causal(mlp, qk_norm, cap):
    m = _randomised(get_config("nano", vocab_size=384, n_layer=2, mlp=mlp, qk_norm=qk_norm, logit_softcap=cap))
    idx = torch.randint(0, 384, (2, 24))
    for t in (0, 5, 23):
        idx2 = idx.clone(); idx2[:, t] = (idx2[:, t] + 1) % 384
        a, b = m(idx), m(idx2)
        torch.testing.assert_close(a[:, :t], b[:, :t])
        assert not torch.allclose(a[:, t:], b[:, t:])


@pytest.mark.parametrize("name,vocab", [(n, 50304) for n in ("nano", "tiny", "small", "medium", "baguette")] +
                         [(n, 100352) for n in ("nano", "tiny", "small")])  # medium/baguette at cl100k: 20 s more, same code
def test_loss_at_init_is_ln_vocab(name, vocab):
    torch.manual_seed(0)
    m = GPT(get_config(name, vocab_size=vocab))
    idx = torch.randint(0, vocab, (2, 32))
    with torch.no_grad(): loss = m(idx, idx).item()
    assert abs(loss - math.log(vocab)) < 0.1, (name, loss, math.log(vocab))


def test_counts_on_meta_device():
    with torch.device("meta"):
        m = GPT(get_config("baguette", vocab_size=100352))
    assert all(p.is_meta for p in m.parameters())
    c = m.config
    per_layer = 4 * c.d_model * c.d_model + 3 * c.d_model * c.mlp_hidden + 2 * c.d_model + 2 * c.head_dim
    assert m.num_params() == 2 * 100352 * 512 + c.n_layer * per_layer + c.d_model
    assert m.flops_per_token(1024) == 6 * (m.num_params() - 100352 * 512) + 6 * 80 * 1024 * 512


def test_vocab_padding():
    assert pad_vocab(100280) == 100352 and pad_vocab(50260) == 50304 and pad_vocab(8192) == 8192


def test_bad_configs_are_clear():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=100, n_head=3)
    with pytest.raises(ValueError, match="unknown model 'giant'"):
        get_config("giant")
    with pytest.raises(ValueError, match="n_layer must be a positive integer"):
        get_config("tiny", n_layer=0)


def test_kv_cache_overflow_is_clear():
    c = KVCache(1, 1, 1, 4, 2)
    with pytest.raises(ValueError, match="KV cache full"):
        c.update(0, torch.zeros(1, 1, 5, 2), torch.zeros(1, 1, 5, 2))


def test_softcap_bounds():
    z = torch.linspace(-1000, 1000, 101)
    assert softcap(z, 30.0).abs().max() <= 30.0 and softcap(z, 30.0)[50] == 0


def test_kv_cache_and_no_cache_greedy_are_identical(trained_nano):
    m, tok = trained_nano
    prompts = [tok.encode("Hyperkalaemia"), tok.encode("A 58-year-old man has crushing chest pain radiating to the left arm."),
               tok.encode("Which drug reverses opioid overdose? Think step by step about receptors and antagonists.")]
    assert len({len(p) for p in prompts}) == 3
    cached = generate(m, prompts, max_new_tokens=64)
    uncached = generate(m, prompts, max_new_tokens=64, use_cache=False)
    assert cached == uncached
    assert all(len(o) == 64 for o in cached)  # no stop ids given: all 64 tokens
    assert [generate(m, [p], max_new_tokens=64)[0] for p in prompts] == cached


def test_sampling_is_seeded_and_top_k_one_is_greedy(trained_nano):
    m, tok = trained_nano
    prompts = [tok.encode("Insulin"), tok.encode("The kidney")]
    a = generate(m, prompts, 30, temperature=1.0, top_k=20, top_p=0.95, seed=3)
    assert a == generate(m, prompts, 30, temperature=1.0, top_k=20, top_p=0.95, seed=3)
    assert generate(m, prompts, 30, temperature=2.0, top_k=1, seed=3) == generate(m, prompts, 30)
    stops = generate(m, prompts, 30, stop_ids=[tok.eot_id, tok.special["answer"]])
    assert all(tok.eot_id not in o for o in stops)
