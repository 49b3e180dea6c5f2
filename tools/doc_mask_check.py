"""Document masking (`fit --doc_mask`, 10_layers) on the device: is the compiled FlexAttention path right, and what does it
save in attention alone?

`DOCS=1 bash tools/gpu_bench.sh` runs it before the benchmark; alone: `PYTHONPATH=. python3 tools/doc_mask_check.py [cuda|cpu]`.
1. The mask: `document_mask(flex=True)` against the boolean mask, uncompiled, forward (the CPU has no FlexAttention
   backward), and its block sparsity at medium's shape with documents of `DOC_LEN` tokens on average.
2. On CUDA: a compiled nano model with the mask (FlexAttention inside the compiled graph) against the same model
   uncompiled (the boolean mask through SDPA): loss and gradients, bf16 autocast.
3. On CUDA: attention alone at medium's shape (16 × 2048, 16 heads of 64), forward and backward, compiled: FlexAttention
   with the document mask against SDPA's plain causal attention (the kernel the recipe runs), in ms."""
import sys, time, warnings

import torch
import torch.nn.functional as F

from medllm.bench import DOC_LEN, _rows
from medllm.layers import document_mask
from medllm.model import GPT, get_config
from torch.nn.attention.flex_attention import flex_attention

dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else ("cuda" if torch.cuda.is_available() else "cpu"))
g = torch.Generator().manual_seed(0)
ok = True


def report(name, good, detail):
    global ok
    ok &= bool(good)
    print(f"{'ok     ' if good else 'FAILED '} {name:44} {detail}", flush=True)


# 1. the two forms of the mask agree (forward, uncompiled), and how much of the causal triangle the block mask keeps
idx = _rows(2, 256, 1000, g, 40)[:, :-1].to(dev)
q, k, v = (torch.randn(2, 4, 256, 32, device=dev) for _ in range(3))
with torch.no_grad(), warnings.catch_warnings():
    warnings.simplefilter("ignore")            # flex_attention uncompiled: expected here
    a = flex_attention(q, k, v, block_mask=document_mask(idx, 0, flex=True))
b = F.scaled_dot_product_attention(q, k, v, attn_mask=document_mask(idx, 0))
report("flex mask = boolean mask (forward)", torch.allclose(a, b, atol=1e-4), f"max diff {(a - b).abs().max():.1e}")
rows = _rows(16, 2048, 50304, g, DOC_LEN)[:, :-1].to(dev)
causal = document_mask(torch.ones(16, 2048, dtype=torch.long, device=dev), 0, flex=True)   # no end-of-text: plain causal
docs = document_mask(rows, 0, flex=True)
print(f"        medium rows (16 x 2048), documents of {DOC_LEN} tokens on average: block sparsity {docs.sparsity():.1f}% "
      f"against {causal.sparsity():.1f}% for plain causal attention", flush=True)

if dev.type == "cuda":
    # 2. the compiled model (FlexAttention) against the uncompiled one (the boolean mask), loss and gradients
    torch.manual_seed(0)
    m = GPT(get_config("nano", vocab_size=1024, seq_len=512)).to(dev)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith(("o_proj.weight", "down_proj.weight")): p.normal_(std=0.02)   # every block does something
    m.doc_mask_id = 0
    batch = _rows(4, 512, 1024, g, 64).to(dev)

    def loss_and_grads(model):
        m.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in m.parameters()])

    try:
        l0, g0 = loss_and_grads(m)
        l1, g1 = loss_and_grads(torch.compile(m))
        cos = F.cosine_similarity(g0, g1, dim=0).item()
        report("compiled (flex) = eager (boolean mask)", abs(l0 - l1) < 2e-2 and cos > 0.99,
               f"loss {l1:.4f} vs {l0:.4f}, gradient cosine {cos:.5f}")
    except Exception as e:   # noqa: BLE001 - a check script: print what failed and go on
        report("compiled (flex) = eager (boolean mask)", False, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")

    # 3. attention alone at medium's shape, forward and backward, compiled
    q, k, v = (torch.randn(16, 16, 2048, 64, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    flex = torch.compile(flex_attention)

    def timed(fn, n=10):
        for _ in range(3): fn()
        torch.cuda.synchronize(); t0 = time.perf_counter()
        for _ in range(n): fn()
        torch.cuda.synchronize(); return (time.perf_counter() - t0) / n * 1e3

    try:
        sdpa_ms = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward())
        flex_causal_ms = timed(lambda: flex(q, k, v, block_mask=causal).sum().backward())
        flex_docs_ms = timed(lambda: flex(q, k, v, block_mask=docs).sum().backward())
        mask_ms = timed(lambda: document_mask(rows, 0, flex=True))
        print(f"        attention forward + backward, one layer of medium: SDPA causal {sdpa_ms:.2f} ms, FlexAttention causal "
              f"{flex_causal_ms:.2f} ms, FlexAttention documents {flex_docs_ms:.2f} ms; building the mask {mask_ms:.2f} ms "
              f"(uncompiled; once per step)", flush=True)
    except Exception as e:   # noqa: BLE001
        report("attention timing", False, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")

print("doc mask check:", "all ok" if ok else "FAILED", flush=True)
sys.exit(0 if ok else 1)
