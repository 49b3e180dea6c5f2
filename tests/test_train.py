"""Training from outside: exact resume (shards and streaming), torchrun DDP == one process, bad input, NaN stop."""
import json
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from medllm.checkpoint import list_checkpoints, load_checkpoint

from conftest import BIN, run_cli


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory, demo_tok):
    out = tmp_path_factory.mktemp("shards")
    r = run_cli("medllm-prepare-data", "--datasets", "sample", "--tokenizer", demo_tok, "--seq_len", 64, "--max_tokens", 60_000,
                "--val_fraction", 0.1, "--output", out)
    assert r.returncode == 0, r.stderr
    return out


# "Deterministic settings" for bitwise comparisons across processes: --deterministic (one CPU thread, deterministic
# algorithms); multi-threaded CPU kernels may sum in a different order from run to run.
DETERMINISTIC = {"OMP_NUM_THREADS": "1"}


def _common(tok, out, steps):
    return ["--model", "nano", "--tokenizer", tok, "--seq_len", 64, "--batch_size", 4, "--max_steps", steps, "--eval_every", 0,
            "--eval_batches", 1, "--log_every", 1, "--no_samples", "--output", out, "--warmup_steps", 2, "--deterministic"]


def _final_params(out):
    ck = load_checkpoint(list_checkpoints(out)[-1])
    return ck["model"], ck["step"]


@pytest.mark.parametrize("mode", ["shards", "streaming"])
def test_resume_is_bitwise_exact(mode, demo_tok, demo_shards, tmp_path):
    data = ["--data_dir", demo_shards] if mode == "shards" else ["--datasets", "sample", "--val_fraction", 0.1, "--num_workers", 2]
    full, part = tmp_path / "full", tmp_path / "part"
    r = run_cli("medllm-train", *_common(demo_tok, full, 12), *data, env=DETERMINISTIC)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("medllm-train", *_common(demo_tok, part, 12), *data, "--save_every", 5, env=DETERMINISTIC)
    assert r.returncode == 0, r.stderr[-2000:]
    # stop at step 5: keep only the step-5 checkpoint, then resume from it
    for p in list_checkpoints(part):
        if not p.name.endswith("000005.pt"): p.unlink()
    (part / "latest").write_text("checkpoint_000005.pt\n")
    r = run_cli("medllm-train", *_common(demo_tok, part, 12), *data, "--resume", "latest", env=DETERMINISTIC)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resume: checkpoint_000005.pt (step 5" in r.stdout + r.stderr
    a, sa = _final_params(full)
    b, sb = _final_params(part)
    assert sa == sb == 12
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(out):
    return [json.loads(l)["loss"] for l in open(Path(out) / "metrics.jsonl") if '"loss"' in l]


def test_torchrun_two_processes_match_one_process(demo_tok, demo_shards, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--model", "nano", "--tokenizer", str(demo_tok), "--seq_len", "64", "--max_steps", "20", "--eval_every", "0",
            "--eval_batches", "1", "--log_every", "1", "--no_samples", "--data_dir", str(demo_shards), "--grad_clip", "0"]
    r = run_cli("medllm-train", *args, "--batch_size", 4, "--output", one)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([str(BIN / "torchrun"), "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
                        "-m", "medllm.train", *args, "--batch_size", "2", "--output", str(two)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((two / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["tokens_per_step"] == 4 * 64
    l1, l2 = _losses(one), _losses(two)
    assert len(l1) == len(l2) == 20
    for a, b in zip(l1, l2):
        assert abs(a - b) <= 1e-4 * abs(a), (a, b)
    assert l1[-1] < l1[0] - 0.5  # and it trains


def test_crafted_pickle_checkpoint_is_refused(demo_tok, tmp_path):
    import os, pickle
    marker = tmp_path / "pwned"
    class Evil:
        def __reduce__(self): return (os.system, (f"touch {marker}",))
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint_000003.pt").write_bytes(pickle.dumps({"format": "medllm-checkpoint", "x": Evil()}))
    r = run_cli("medllm-train", *_common(demo_tok, out, 3), "--datasets", "sample", "--val_fraction", 0.1,
                "--resume", str(out / "checkpoint_000003.pt"))
    assert r.returncode == 2 and "not a readable medllm checkpoint" in r.stderr
    assert not marker.exists()


@pytest.mark.parametrize("args,needle", [
    (["--model", "giant"], "unknown model 'giant'"),
    (["--datasets", "nosuch"], "unknown source 'nosuch'"),
    (["--batch_size", "0"], "batch_size must be >= 1"),
    (["--batch_tokens", "1000"], "is not a multiple of batch_size"),
    (["--seq_len", "4096"], "beyond model 'nano'"),
    (["--resume", "/no/such.pt"], "--resume checkpoint not found"),
    (["--output", "/proc/medllm-run"], "is not writable"),
    (["--data_dir", "/no/such/dir"], "--data_dir not found"),
    (["--optimizer", "sgd"], "unknown optimizer 'sgd'"),
    (["--fp8_head"], "--fp8_head needs the full cross-entropy"),
    (["--fp8_head", "--loss", "full", "--batch_size", "3", "--seq_len", "5"], "multiple of 16"),
    (["--fp8_mlp", "--batch_size", "3", "--seq_len", "5"], "--fp8_mlp needs batch_size × seq_len a multiple of 16"),
    (["--fp8_attn", "--batch_size", "3", "--seq_len", "5"], "--fp8_attn needs batch_size × seq_len a multiple of 16"),
    (["--model_options", "n_head=3"], "d_model=256 must be divisible by n_head=3"),
    (["--model_options", "layers=2"], "bad model option 'layers=2'"),
    (["--model_options", "n_layer=two"], "model option n_layer='two': expected int"),
    (["--model_options", "vocab_size=512"], "--model_options vocab_size: set by --tokenizer and --seq_len instead"),
])
def test_train_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    base = ["--max_steps", "1", "--output", str(tmp_path / "o"), "--no_samples"]
    r = run_cli("medllm-train", *base, *args)
    assert r.returncode == 2, (r.stdout[-500:], r.stderr[-1000:])
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in r.stderr, r.stderr


def test_model_options_reach_the_checkpoint_and_a_resume_must_match(demo_tok, tmp_path):
    "`--model_options` replaces preset fields; the checkpoint keeps the whole config, so a resume with other options is refused."
    out = tmp_path / "run"
    r = run_cli("medllm-train", *_common(demo_tok, out, 2), "--datasets", "sample", "--model_options", "n_layer=1,d_model=128")
    assert r.returncode == 0, r.stderr[-1000:]
    assert "nano n_layer=1,d_model=128:" in r.stdout
    ck = load_checkpoint(list_checkpoints(out)[-1])
    assert (ck["config"]["n_layer"], ck["config"]["d_model"], ck["config"]["mlp_hidden"]) == (1, 128, 384)
    assert ck["model"]["embed.weight"].shape[1] == 128 and not any(k.startswith("blocks.1.") for k in ck["model"])
    r = run_cli("medllm-train", *_common(demo_tok, out, 4), "--datasets", "sample", "--model_options", "n_layer=2,d_model=128", "--resume", "latest")
    assert r.returncode == 2 and "the checkpoint's model differs from this run's (n_layer 1 -> 2)" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_resume_with_other_tokenizer_is_refused(demo_tok, tmp_path):
    out = tmp_path / "run"
    r = run_cli("medllm-train", *_common(demo_tok, out, 2), "--datasets", "sample", "--val_fraction", 0.1)
    assert r.returncode == 0, r.stderr[-1000:]
    r = run_cli("medllm-train", *_common("cl100k", out, 4), "--datasets", "sample", "--resume", "latest")
    assert r.returncode == 2 and "differs" in r.stderr or "tokenizer" in r.stderr, r.stderr


@pytest.mark.heavy
def test_two_torchrun_nodes_train_together(demo_tok, demo_shards, tmp_path):
    "Multi-node through torchrun's c10d rendezvous: two launches (--nnodes 2) on 127.0.0.1 form one 2-process job."
    port = _free_port()
    args = ["-m", "medllm.train", "--model", "nano", "--tokenizer", str(demo_tok), "--seq_len", "64", "--batch_size", "2",
            "--max_steps", "6", "--eval_every", "0", "--eval_batches", "1", "--log_every", "1", "--no_samples",
            "--data_dir", str(demo_shards), "--output", str(tmp_path / "run")]
    procs = [subprocess.Popen([str(BIN / "torchrun"), "--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1",
                               "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=medllm-test", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["tokens_per_step"] == 2 * 2 * 64
    assert len(_losses(tmp_path / "run")) == 6


def test_test_only_runs_one_step_and_reports(demo_tok, tmp_path):
    r = run_cli("medllm-train", *_common(demo_tok, tmp_path / "t", 100), "--datasets", "sample", "--test_only", "--compile")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["steps"] == 1 and not list_checkpoints(tmp_path / "t")
    assert "step 1 | loss" in r.stdout


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(demo_tok, tmp_path):
    out = tmp_path / "nan"
    r = run_cli("medllm-train", *_common(demo_tok, out, 20), "--datasets", "sample", "--save_every", 1, "--lr_head", "1e37",
                "--grad_clip", "0", "--warmup_steps", "0")
    assert r.returncode == 1, (r.stdout[-1000:], r.stderr[-1000:])
    assert "loss is nan" in r.stderr or "loss is inf" in r.stderr, r.stderr[-500:]
    assert "Traceback" not in r.stderr
    good = list_checkpoints(out)
    assert good and load_checkpoint(good[-1])["step"] >= 1


def test_doc_mask_trains_and_masks_the_validation_loss(demo_tok, tmp_path):
    # rows of 512 tokens hold several demo documents (80-470 tokens each): with --doc_mask each attends only to itself,
    # in training and in the validation loss, so the same run without it must end with another validation loss
    val = {}
    for flag in ([], ["--doc_mask"]):
        out = tmp_path / ("masked" if flag else "plain")
        r = run_cli("medllm-train", *_common(demo_tok, out, 3), "--datasets", "sample", "--val_fraction", 0.2,
                    "--seq_len", 512, *flag, env=DETERMINISTIC)
        assert r.returncode == 0, r.stderr[-2000:]
        summary = json.loads((out / "summary.json").read_text())
        assert json.loads((out / "run_info.json").read_text())["config"]["doc_mask"] is bool(flag)
        val[bool(flag)] = summary["val_loss"]
    assert all(v is not None and 0 < v < 20 for v in val.values()) and val[True] != val[False], val


def test_fp8_head_mlp_attn_train_and_validation_reads_the_bf16_products(demo_tok, tmp_path):
    """`--fp8_head`, `--fp8_mlp`, `--fp8_attn`: recorded in run_info; the validation loss before the first step is the plain run's,
    bitwise (validation reads the plain products). With the head in FP8 the first training loss differs from the plain
    one by FP8 rounding only. With the MLPs (or attention's projections) in FP8 it is the plain one exactly, since
    the zero-initialised down (o) projections make every MLP's (attention's) output 0 either way (0 in FP8 is 0), and
    the second differs by FP8 rounding only."""
    metrics = {}
    for flag in ("", "--fp8_head", "--fp8_mlp", "--fp8_attn"):
        out = tmp_path / (flag.strip("-") or "plain")
        r = run_cli("medllm-train", *_common(demo_tok, out, 2), "--datasets", "sample", "--loss", "full", "--eval_every", 2,
                    *([flag] if flag else []), env=DETERMINISTIC)
        assert r.returncode == 0, r.stderr[-2000:]
        config = json.loads((out / "run_info.json").read_text())["config"]
        assert (config["fp8_head"], config["fp8_mlp"], config["fp8_attn"]) == (flag == "--fp8_head", flag == "--fp8_mlp", flag == "--fp8_attn")
        metrics[flag] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val0, step1, step2 = ({f: next(m for m in metrics[f] if m["step"] == s and key in m)[key] for f in metrics}
                          for s, key in ((0, "val_loss"), (1, "loss"), (2, "loss")))
    assert val0["--fp8_head"] == val0["--fp8_mlp"] == val0["--fp8_attn"] == val0[""], val0
    assert step1["--fp8_head"] != step1[""] and abs(step1["--fp8_head"] - step1[""]) < 0.01, step1
    for flag in ("--fp8_mlp", "--fp8_attn"):
        assert step1[flag] == step1[""], (flag, step1)
        assert step2[flag] != step2[""] and abs(step2[flag] - step2[""]) < 0.02, (flag, step2)


def test_muon_auto_logs_its_forms_and_a_resumed_run_keeps_them(demo_tok, demo_shards, tmp_path):
    """`--muon_impl auto`: the forms chosen on the first step are logged once, saved with the optimizer in every
    checkpoint and reported in summary.json; a run resumed from step 2 loads them instead of timing again, and ends
    bitwise where the uninterrupted run ended."""
    out = tmp_path / "auto"
    args = [*_common(demo_tok, out, 4), "--data_dir", demo_shards, "--muon_impl", "auto", "--save_every", 2]
    r = run_cli("medllm-train", *args, env=DETERMINISTIC)
    assert r.returncode == 0, r.stderr[-2000:]
    forms = json.loads((out / "summary.json").read_text())["muon_forms"]
    assert set(forms) == {"256x256", "256x768"} and forms["256x256"] == "fold" and forms["256x768"] in ("fold", "gram")
    assert (r.stdout + r.stderr).count("muon_impl auto: Newton–Schulz forms") == 1
    assert all(load_checkpoint(p)["optimizer"]["muon"]["ns_choice"] == forms for p in list_checkpoints(out))
    full, _ = _final_params(out)
    for p in list_checkpoints(out):
        if not p.name.endswith("000002.pt"): p.unlink()
    (out / "latest").write_text("checkpoint_000002.pt\n")
    r = run_cli("medllm-train", *args, "--resume", "latest", env=DETERMINISTIC)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"muon_impl auto: Newton–Schulz forms {forms}" in r.stdout + r.stderr
    resumed, step = _final_params(out)
    assert step == 4 and all(torch.equal(full[k], resumed[k]) for k in full)


def test_compile_blocks_compiles_one_block_for_all_and_gives_the_whole_models_step(demo_tok, tmp_path):
    """`fit --compile_blocks` (compile_model): Dynamo compiles three graphs for nano's four blocks, final norm and loss
    (one block's code, reused by the other three), where the whole model is one graph; the loss and gradients are the
    whole compiled model's, within float32 rounding (fusion differs at the blocks' edges); fit runs a step with it."""
    import copy
    import torch._dynamo
    from torch._dynamo.utils import counters
    from medllm.model import GPT, get_config
    from medllm.train import compile_model
    torch.manual_seed(0)
    base = GPT(get_config("nano", vocab_size=256)); base.loss_impl = "full"
    x = torch.randint(0, 256, (2, 32)); y = torch.randint(0, 256, (2, 32))
    out = {}
    for blocks in (False, True):
        m = copy.deepcopy(base)
        torch._dynamo.reset(); counters.clear()
        loss = compile_model(m, True, False, torch.device("cpu"), blocks)(x, y)
        loss.backward()
        out[blocks] = loss.item(), {n: p.grad for n, p in m.named_parameters()}, counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert (out[False][2], out[True][2]) == (1, 3)
    assert abs(out[False][0] - out[True][0]) < 1e-5
    for n, g in out[False][1].items():
        assert (g - out[True][1][n]).norm() <= 1e-4 * g.norm() + 1e-8, n
    r = run_cli("medllm-train", *_common(demo_tok, tmp_path / "b", 100), "--datasets", "sample", "--test_only", "--compile", "--compile_blocks")
    assert r.returncode == 0 and "step 1 | loss" in r.stdout, r.stderr[-2000:]


@pytest.mark.heavy
def test_compile_time_benchmark_runs():
    """benchmarks/compile_time.py: both forms, each in its own process with empty caches, the same first loss, and the
    ratios line; a bad shape is refused in one line, exit code 2."""
    import sys
    script = Path(__file__).parents[1] / "benchmarks" / "compile_time.py"
    r = subprocess.run([sys.executable, str(script), "--preset", "nano", "--layers", "2", "--steps", "1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert [l.split("compiled ")[1].split(":")[0].strip() for l in lines[:2]] == ["whole", "blocks"], r.stdout
    assert lines[0].rsplit("loss ", 1)[1] == lines[1].rsplit("loss ", 1)[1]         # the same model, the same first loss
    assert lines[2].startswith("block by block: first step ") and "x the whole model's speed" in lines[2]
    bad = subprocess.run([sys.executable, str(script), "--shape", "64"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--shape must be BATCHxSEQ" in bad.stderr and "Traceback" not in bad.stderr
