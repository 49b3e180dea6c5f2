"""Run under torchrun (gloo): sharded Muon (each rank orthogonalises its share, then broadcasts) == every rank doing all."""
import torch
import torch.distributed as dist

from medllm import optim

SHAPES = [(16, 8), (8, 16), (12, 12), (4, 20), (20, 4), (12, 12), (16, 8), (12, 12)]   # repeats: stacked per shape


def run(shard: bool, impl: str = "eager"):
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(*s)) for s in SHAPES]
    sym = impl in ("compiled_sym", "compiled_gram")      # the symmetric products in Triton (its interpreter here: TRITON_INTERPRET=1)
    opt = optim.Muon(ps, lr=0.02, weight_decay=0.01, shard=shard, compiled=impl != "eager", ns_fold=sym, ns_symmetric=sym,
                     ns_gram=impl == "compiled_gram", ns_auto=impl == "auto")   # (4, 20), (20, 4), (16, 8), (8, 16): wide enough for the Gram form
    calls, orig, orig_time = [0], optim.newton_schulz, optim.time_ns_forms

    def counted(G, *a, **k):                             # matrices orthogonalised (a stack counts each of its matrices)
        calls[0] += G.size(0) if G.ndim == 3 else 1
        return orig(G, *a, **k)
    def timed(X, forms, *a, **k):                        # auto: rank 0 alone would choose the Gram form, rank 1 the plain one; summed, Gram
        return {"fold": 5.0, "gram": 1.0} if dist.get_rank() == 0 else {"fold": 1.0, "gram": 2.0}
    optim.newton_schulz, optim.time_ns_forms = counted, timed
    try:
        for step in range(3):
            g = torch.Generator().manual_seed(step)
            for p in ps: p.grad = torch.randn(p.shape, generator=g)
            for group in opt.param_groups: group["lr"] = 0.02 / (step + 1)   # a schedule
            opt.step()
    finally:
        optim.newton_schulz, optim.time_ns_forms = orig, orig_time
    return [p.detach().clone() for p in ps], calls[0], opt


if __name__ == "__main__":
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    for impl in ("eager", "compiled", "compiled_sym", "compiled_gram", "auto"):   # eager, the elementwise work compiled, the symmetric products, the Gram form, each shape's form timed (20_optim)
        sharded, n_sharded, opt = run(True, impl)
        replicated, n_replicated, _ = run(False, impl)
        assert all(torch.equal(x, y) for x, y in zip(sharded, replicated)), f"sharded Muon differs from replicated Muon ({impl=})"
        bufs = [opt.state[p]["momentum_buffer"] for g in opt.param_groups for p in g["params"]]
        for x in sharded + bufs:                         # and every rank holds the same matrices and momentum buffers
            y = x.clone(); dist.broadcast(y, 0)
            assert torch.equal(x, y), f"ranks differ ({impl=})"
        assert len(opt.state) == len(SHAPES)             # every rank keeps every momentum buffer: rank 0's checkpoint is whole
        if impl == "auto":                               # the ranks' times summed: every rank chose the same forms
            assert opt.ns_choice == {"8x16": "gram", "12x12": "fold", "4x20": "gram"}, opt.ns_choice
        print(f"rank {rank}: {impl}: matrices orthogonalised sharded {n_sharded} replicated {n_replicated}", flush=True)
    dist.destroy_process_group()
