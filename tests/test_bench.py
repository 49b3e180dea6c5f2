"""medllm-bench on the CPU with small shapes: it runs, its JSON has every field, bad flags are one line."""
import json
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli
from medllm.bench import _variant

RUN_FIELDS = {"impl", "preset", "params_M", "batch_size", "seq_len", "optimizer", "loss", "attention", "residual", "muon_impl", "graphs", "docs", "blocks", "fp8", "fp8_mlp", "fp8_attn", "doc_len", "compile", "dtype", "steps", "step_ms", "step_ms_synced", "step_ms_skip", "host_waits", "clocks", "clocks_skip",
              "tokens_per_s", "mfu", "flops_per_token", "optimizer_share", "first_step_s", "compile_s", "compile_optimizer_s", "muon_forms", "peak_memory_gb", "final_loss"}


def test_bench_cpu_small_shapes(tmp_path):
    out = tmp_path / "bench.json"
    r = run_cli("medllm-bench", "--device", "cpu", "--configs", "nano:2x64", "--steps", 2, "--losses", "chunked,full,lse",
                "--residual", "compute,float32", "--muon_impl", "eager,auto", "--candidate", "loss=lse,muon_impl=compiled,fp8=on,fp8_mlp=on,fp8_attn=on", "--candidate", "nano:docs=on", "--doc_len", 16, "--warmup", 1, "--vocab_size", 4096, "--output", out, "--profile", 3, env={"OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert {"date", "device", "torch", "python", "command", "matmul_peak_flops", "runs", "ratios", "optimizer_share", "projection",
            "data_loader", "evaluation", "muon", "configs", "wall_s"} <= set(res)
    assert [(x["impl"], x["optimizer"], x["loss"], x["residual"], x["muon_impl"]) for x in res["runs"]] == [
        ("medllm", "muon", "chunked", "compute", "eager"), ("medllm", "adamw", "chunked", "compute", None),   # the recipe
        ("transformers", "adamw", "transformers", None, None),
        ("medllm", "muon", "lse", "compute", "compiled"), ("medllm", "adamw", "lse", "compute", None),   # the candidates (fp8=on,fp8_mlp=on,fp8_attn=on)
        ("medllm", "muon", "chunked", "compute", "eager"), ("medllm", "adamw", "chunked", "compute", None),   # (docs=on)
        ("medllm", "adamw", "chunked", "float32", None), ("medllm", "adamw", "full", "compute", None),   # one change each
        ("medllm", "adamw", "lse", "compute", None), ("medllm", "muon", "chunked", "compute", "auto")]   # (Muon's change runs with Muon)
    for run in res["runs"]:
        assert RUN_FIELDS <= set(run), RUN_FIELDS - set(run)
        assert run["graphs"] == run["blocks"] == ("off" if run["impl"] == "medllm" else None)
        assert run["fp8"] == ("on" if "-fp8" in _variant(run) else "off" if run["impl"] == "medllm" else None)
        assert run["fp8_mlp"] == run["fp8_attn"] == run["fp8"]   # the one candidate runs all three
        assert (run["docs"], run["doc_len"]) == (("on", 16) if "-docs" in _variant(run) else ("off" if run["impl"] == "medllm" else None, None))
        assert run["tokens_per_s"] > 0 and 0 < run["mfu"] < 1 and 0 < run["optimizer_share"] < 1 and run["peak_memory_gb"] > 0
    assert set(res["ratios"]) == {f"nano/medllm-{v}_vs_transformers-adamw" for v in ("muon", "adamw", "muon-compiled-lsece-fp8-fp8mlp-fp8attn", "adamw-lsece-fp8-fp8mlp-fp8attn", "muon-docs", "adamw-docs", "adamw-fullce", "adamw-lsece", "adamw-float32-residual", "muon-auto")}
    assert all(len(x["profile"]) == 3 and x["profile"][0]["ms_per_step"] > 0 for x in res["runs"])   # where the time goes
    assert all(x["profile_split"]["matmul"] > 0 and x["profile_split"]["total"] > 0 for x in res["runs"])   # by kind
    assert "profile of nano medllm-muon" in r.stdout
    assert res["muon"]["matrices"] == 28 and res["muon"]["batched_ms"] > 0 and res["muon"]["per_matrix_ms"] > 0
    assert set(res["muon"]["impl_ms"]) == {"eager", "auto", "compiled"} and res["muon"]["impl_ms"]["eager"] == res["muon"]["batched_ms"]
    assert res["muon"]["profile_split"]["total"] > 0 and res["muon"]["profile_split_auto"]["total"] > 0
    forms = res["runs"][-1]["muon_forms"]                  # auto: the form chosen for each of nano's shapes, and its timings
    assert set(forms) == {"256x256", "256x768"} and forms["256x256"] == "fold" and forms["256x768"] in ("fold", "gram")
    assert all(x["muon_forms"] is None for x in res["runs"][:-1]) and all(x["compile_optimizer_s"] >= 0 for x in res["runs"])
    ns = res["muon"]["auto_ns_ms"]
    assert set(ns) == {"256x768"} and set(ns["256x768"]) == {"fold", "gram"} and res["muon"]["auto_forms"]["256x768"] == min(ns["256x768"], key=ns["256x768"].get)
    assert "Newton–Schulz on 256x768: fold" in r.stdout
    assert all(x["batch_size"] == 2 and x["seq_len"] == 64 for x in res["runs"])
    assert res["optimizer_share"]["8_gpus_sharded_muon"] < res["optimizer_share"]["one_gpu"]
    assert [p["tokens_B"] for p in res["projection"]["runs"]] == [2.0, 5.0]
    assert res["projection"]["runs_sharded_muon"][0]["minutes"] < res["projection"]["runs"][0]["minutes"]
    assert res["projection"]["grad_accum"] == 2 ** 19 // (8 * 2 * 64)      # the README job's batch, in nano's 2 × 64 rows
    assert res["projection"]["runs_recipe_batch"][0]["minutes"] < res["projection"]["runs_sharded_muon"][0]["minutes"]
    shown = run_cli("medllm-bench", "--show", out)                        # the summary again, from the file, measuring nothing
    assert shown.returncode == 0 and shown.stdout.splitlines()[-5:] == r.stdout.splitlines()[-5:], shown.stderr
    assert "nano/medllm-muon_vs_transformers-adamw" in shown.stdout
    assert res["data_loader"]["tokens_per_s"] > 0 and res["evaluation"]["questions_per_s"] > 0
    assert r.stdout.rstrip().splitlines()[-1].startswith("| nano")   # the table is printed last


def test_bench_bad_flags(capsys):
    """Each bad flag: exit 2 and one line (in this process, through main; one real process checks the console script).
    Among them, on this CPU: no --configs (the GPU shapes by default), and graphs=on (CUDA graphs)."""
    from medllm.bench import main
    for args in (["--configs", "huge"], ["--impls", "jax"], ["--seq_len", "4096", "--configs", "nano"], ["--steps", "0"],
                 ["--optimizers", "sgd"], ["--warmup", "0"], ["--configs", "nano:2by64"], ["--configs", "nano:2x4096"],
                 ["--losses", "fused"], ["--losses", ","], ["--time_budget", "0"], ["--attention", "fast"], ["--profile", "-1"],
                 ["--residual", "fp16"], ["--residual", ","], ["--muon_impl", "fused"], ["--candidate", "loss"], ["--candidate", "graphs=maybe"], ["--candidate", "blocks=on"], ["--compile", "--candidate", "blocks=on,graphs=on"],
                 ["--candidate", "graphs=on"], ["--compile", "--configs", "nano:2x64", "--candidate", "graphs=on"], [],
                 ["--candidate", "fp8=on"], ["--candidate", "fp8=maybe"], ["--candidate", "fp8_mlp=yes"], ["--candidate", "fp8_attn=1"],
                 ["--candidate", "loss=fused"], ["--candidate", "speed=fast"], ["--candidate", ","],
                 ["--show", "/nonexistent/bench.json"], ["--show", __file__]):
        with pytest.raises(SystemExit) as e: main(["--device", "cpu", *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, (args, err)
    r = run_cli("medllm-bench", "--device", "cpu", "--configs", "nano:2by64")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


def test_failed_and_skipped_runs_are_recorded_and_the_rest_go_on(monkeypatch, tmp_path):
    "A run that raises (say, out of memory) is recorded with its error; past the time budget the rest are recorded as skipped."
    import torch
    from medllm import bench
    real = bench.bench_step
    def flaky(impl, *a, **k):
        if impl == "transformers": raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
        return real(impl, *a, **k)
    monkeypatch.setattr(bench, "bench_step", flaky)
    saved = []
    res = bench.run_bench([("nano", 2, 32)], 2, 32, torch.device("cpu"), steps=1, warmup=1, vocab_size=1024, data=False,
                          evaluation=False, muon=False, on_update=lambda r: saved.append(len(r["runs"])))
    assert [("error" in r, "tokens_per_s" in r) for r in res["runs"]] == [(False, True), (False, True), (True, False)]   # transformers last
    assert res["runs"][2]["error"].startswith("OutOfMemoryError: CUDA out of memory") and res["ratios"] == {}
    assert saved == [1, 2, 3, 3] and "error" in bench.bench_table(res)
    res = bench.run_bench([("nano", 2, 32)], 2, 32, torch.device("cpu"), steps=1, warmup=1, vocab_size=1024, data=False,
                          evaluation=False, muon=False, time_budget=1e-9)
    assert all(r["skipped"].startswith("time budget") for r in res["runs"]) and "projection" not in res


@pytest.mark.heavy
def test_fp8_traffic_benchmark(tmp_path):
    """benchmarks/fp8_traffic.py on nano's block: a per-token and per-step figure for every setting, FP8's casts adding to
    the generated kernels' traffic and its one-byte operands taking from the products'; bad --tokens refused, exit 2."""
    import sys
    script = Path(__file__).parents[1] / "benchmarks" / "fp8_traffic.py"
    out = tmp_path / "traffic.json"
    r = subprocess.run([sys.executable, str(script), "--preset", "nano", "--tokens", "32,64", "--output", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    s = res["settings"]
    assert list(s) == ["bf16", "fp8 MLP", "fp8 MLP, 3 linears", "fp8 attention", "fp8 both"] and res["preset"] == "nano" and res["tokens"] == [32, 64]
    bf16 = s["bf16"]
    for name in ("fp8 MLP", "fp8 MLP, 3 linears", "fp8 attention", "fp8 both"):
        assert s[name]["generated_bytes_per_token"] > bf16["generated_bytes_per_token"], name
        assert s[name]["extern_bytes_per_token"] < bf16["extern_bytes_per_token"], name
    assert s["fp8 both"]["generated_bytes_per_token"] > max(s["fp8 MLP"]["generated_bytes_per_token"], s["fp8 attention"]["generated_bytes_per_token"])
    assert s["fp8 MLP"]["generated_bytes_per_token"] < s["fp8 MLP, 3 linears"]["generated_bytes_per_token"]   # fp8_swiglu: one pass
    assert r.stdout.splitlines()[-1].startswith("fp8 both")
    bad = subprocess.run([sys.executable, str(script), "--tokens", "64,3000"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--tokens" in bad.stderr and "Traceback" not in bad.stderr


def test_fp8_bounds_benchmark(tmp_path, trained_nano):
    """benchmarks/fp8_bounds.py on a trained nano saved as `fit` saves it: every block's gate and up gradients lie within
    `fp8_swiglu`'s bounds (ratio in (0, 1]), their e5m2 casts stay close to float32 under both scalings; a checkpoint
    without a train_config is refused in one line, exit code 2."""
    import dataclasses
    import sys
    from medllm.checkpoint import save_checkpoint
    from medllm.train import TrainConfig
    model, tok = trained_nano
    cfg = TrainConfig(model="nano", model_options="n_layer=2", datasets="sample", seq_len=128, batch_size=2, eval_batches=2, val_fraction=0.2)
    state = {"config": dataclasses.asdict(model.config), "model": model.state_dict(), "tokenizer": tok.spec()}
    path = save_checkpoint(tmp_path / "run", 30, {**state, "train_config": dataclasses.asdict(cfg)})
    script = Path(__file__).parents[1] / "benchmarks" / "fp8_bounds.py"
    out = tmp_path / "bounds.json"
    r = subprocess.run([sys.executable, str(script), str(path), "--batches", "2", "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["batches"] == 2 and res["tokens_per_batch"] == 2 * 128 and len(res["blocks"]) == 2
    for block in res["blocks"]:
        for name in ("up", "gate"):
            g = block[name]
            assert 0 < g["ratio_min"] <= g["ratio_max"] <= 1, g     # a bound bounds
            for scaling in ("own", "bound"):
                assert g[scaling]["nonzero"] > 0 and g[scaling]["cosine_min"] > 0.99, (name, scaling, g)
    assert r.stdout.count(" | up ") == 2 and r.stdout.count(" | gate ") == 2
    bare = save_checkpoint(tmp_path / "bare", 1, state)
    bad = subprocess.run([sys.executable, str(script), str(bare)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "train_config" in bad.stderr and "Traceback" not in bad.stderr
