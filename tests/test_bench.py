"""medllm-bench on the CPU with small shapes: it runs, its JSON has every field, bad flags are one line."""
import json

from conftest import run_cli

RUN_FIELDS = {"impl", "preset", "params_M", "batch_size", "seq_len", "optimizer", "compile", "dtype", "steps", "step_ms",
              "tokens_per_s", "mfu", "flops_per_token", "optimizer_share", "first_step_s", "compile_s", "peak_memory_gb", "final_loss"}


def test_bench_cpu_small_shapes(tmp_path):
    out = tmp_path / "bench.json"
    r = run_cli("medllm-bench", "--device", "cpu", "--configs", "nano", "--batch_size", 2, "--seq_len", 64, "--steps", 2,
                "--warmup", 1, "--vocab_size", 4096, "--output", out, env={"OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert {"date", "device", "torch", "python", "command", "matmul_peak_flops", "runs", "ratios", "optimizer_share", "projection",
            "data_loader", "evaluation"} <= set(res)
    assert [(x["impl"], x["optimizer"]) for x in res["runs"]] == [("medllm", "muon"), ("medllm", "adamw"), ("transformers", "adamw")]
    for run in res["runs"]:
        assert RUN_FIELDS <= set(run), RUN_FIELDS - set(run)
        assert run["tokens_per_s"] > 0 and 0 < run["mfu"] < 1 and 0 < run["optimizer_share"] < 1 and run["peak_memory_gb"] > 0
    assert set(res["ratios"]) == {"nano/medllm-muon_vs_transformers-adamw", "nano/medllm-adamw_vs_transformers-adamw"}
    assert res["optimizer_share"]["8_gpus_sharded_muon"] < res["optimizer_share"]["one_gpu"]
    assert [p["tokens_B"] for p in res["projection"]["runs"]] == [2.0, 5.0]
    assert res["data_loader"]["tokens_per_s"] > 0 and res["evaluation"]["questions_per_s"] > 0
    assert r.stdout.rstrip().splitlines()[-1].startswith("| nano")   # the table is printed last


def test_bench_bad_flags():
    for args in (["--configs", "huge"], ["--impls", "jax"], ["--seq_len", "4096", "--configs", "nano"], ["--steps", "0"],
                 ["--optimizers", "sgd"], ["--warmup", "0"]):
        r = run_cli("medllm-bench", "--device", "cpu", *args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (args, r.stderr)
