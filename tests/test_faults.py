"""The fault-injection suite (issue 8): faults, bad input and untrusted files, tried on purpose.

Every test here injects one fault into real code paths: real SIGKILLs of real training processes (armed at an
exact moment by `MEDLLM_FAULT`, see 00_core), a real file-size limit on a process to fail a checkpoint write,
crafted pickles, damaged files, bad data and bad flags through every CLI. `pytest -m faults` runs the suite on its
own; the slow parts (the kill -9 matrix, torchrun, the disk-full run) are also marked heavy (`make test-heavy`).
"""
import gzip
import io
import json
import math
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

from medllm.checkpoint import list_checkpoints, load_checkpoint

from conftest import BIN, run_cli

pytestmark = pytest.mark.faults


def _train_args(tok, out, steps=8, *extra):
    return ["--model", "nano", "--tokenizer", tok, "--datasets", "sample", "--val_fraction", 0.1, "--seq_len", 64,
            "--batch_size", 4, "--max_steps", steps, "--eval_every", 4, "--eval_batches", 1, "--save_every", 2,
            "--log_every", 1, "--no_samples", "--warmup_steps", 2, "--deterministic", "--output", out, *extra]


ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _metrics(out):
    recs = [json.loads(l) for l in open(Path(out) / "metrics.jsonl")]
    return [r["step"] for r in recs if "loss" in r], [r["step"] for r in recs if "val_loss" in r]


@pytest.fixture(scope="module")
def reference_run(demo_tok, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    r = run_cli("medllm-train", *_train_args(demo_tok, out), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def _same_params(a_dir, b_dir):
    a, b = load_checkpoint(list_checkpoints(a_dir)[-1]), load_checkpoint(list_checkpoints(b_dir)[-1])
    assert a["step"] == b["step"]
    return all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


# ---------------------------------------------------------------------------------------------------------------------
# 1. kill -9 at five moments, then --resume latest: bitwise the uninterrupted run, no duplicated or missing metrics

KILLS = [("step_end@5", "between steps"), ("optimizer@5", "in the optimizer step (Muon done, AdamW not)"),
         ("checkpoint_write@4", "while writing a checkpoint"), ("evaluation@4", "during evaluation"),
         ("data@22", "while reading data (row 22: batch 5)")]


@pytest.mark.parametrize("fault,moment", [pytest.param(f, m, id=f.split("@")[0], marks=() if f == "step_end@5" else pytest.mark.heavy)
                                          for f, m in KILLS])
def test_kill9_then_resume_is_exact(fault, moment, demo_tok, reference_run, tmp_path):
    out = tmp_path / "run"
    r = run_cli("medllm-train", *_train_args(demo_tok, out), env={**ONE_THREAD, "MEDLLM_FAULT": fault})
    assert r.returncode == -signal.SIGKILL, (moment, r.returncode, r.stderr[-1500:])
    assert not (out / "summary.json").exists()
    r = run_cli("medllm-train", *_train_args(demo_tok, out, 8, "--resume", "latest"), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resume: checkpoint_" in r.stdout + r.stderr
    assert _same_params(reference_run, out), f"parameters differ after a kill {moment}"
    train_steps, eval_steps = _metrics(out)
    assert train_steps == list(range(1, 9)) and eval_steps == [0, 4, 8], (train_steps, eval_steps)
    assert not list(out.glob("*.tmp"))


# ---------------------------------------------------------------------------------------------------------------------
# 2. damaged checkpoints: a clear error naming the file; --resume latest falls back to the newest valid one

def _damage(path: Path, how: str):
    data = path.read_bytes()
    if how == "truncated": path.write_bytes(data[: len(data) // 2])
    elif how == "zero_bytes": path.write_bytes(b"")
    elif how == "corrupted":
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 4096]) + data[mid + 4096:])


@pytest.fixture(scope="module")
def short_run(demo_tok, tmp_path_factory):
    "A 4-step run with checkpoints at steps 2 and 4."
    out = tmp_path_factory.mktemp("short")
    r = run_cli("medllm-train", *_train_args(demo_tok, out, 4), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.mark.parametrize("how", ["truncated", "zero_bytes", "corrupted"])
def test_damaged_checkpoint(how, short_run, demo_tok, tmp_path):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(short_run, out)
    bad = out / "checkpoint_000004.pt"
    _damage(bad, how)
    for cli, args in [("medllm-train", _train_args(demo_tok, tmp_path / "other", 6, "--resume", bad)),
                      ("medllm-evaluate", ["--checkpoint", bad, "--benchmarks", "demo", "--output", tmp_path / "ev"]),
                      ("medllm-generate", ["--checkpoint", bad, "--prompt", "hi"]),
                      ("medllm-export", ["--checkpoint", bad, "--output", tmp_path / "hf"])]:
        r = run_cli(cli, *args)
        assert r.returncode == 2 and str(bad) in r.stderr and "Traceback" not in r.stderr, (cli, r.stderr[-800:])
        assert r.stderr.strip().count("\n") == 0, r.stderr
    r = run_cli("medllm-train", *_train_args(demo_tok, out, 6, "--resume", "latest"), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-1500:]
    assert "skipping checkpoint_000004.pt" in r.stdout + r.stderr and "resume: checkpoint_000002.pt" in r.stdout + r.stderr
    assert load_checkpoint(out / "checkpoint_000006.pt")["step"] == 6


# ---------------------------------------------------------------------------------------------------------------------
# 3. crafted pickles: refused everywhere a file is loaded, and nothing runs

class _Payload:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))


def test_crafted_pickles_are_refused(demo_tok, tmp_path):
    marker = tmp_path / "PWNED"
    evil = pickle.dumps({"format": "medllm", "model": _Payload(marker)})
    ckpt = tmp_path / "checkpoint_000001.pt"; ckpt.write_bytes(evil)
    zipped = tmp_path / "zipped.pt"
    torch.save({"format": "medllm", "model": _Payload(marker)}, zipped)   # the zip layout torch.save writes, with a payload
    tok_file = tmp_path / "tokenizer.json"; tok_file.write_bytes(evil)
    tok_pkl = tmp_path / "tokenizer.pkl"; tok_pkl.write_bytes(evil)
    data_pkl = tmp_path / "rows.pkl"; data_pkl.write_bytes(evil)
    data_jsonl = tmp_path / "rows.jsonl"; data_jsonl.write_bytes(evil)
    shards = tmp_path / "shards"; shards.mkdir(); (shards / "metadata.json").write_bytes(evil)
    exported = tmp_path / "hf"; exported.mkdir()
    (exported / "medllm.json").write_text("{}"); (exported / "model.safetensors").write_bytes(evil)
    runs = [("medllm-train", _train_args(demo_tok, tmp_path / "o1", 2, "--resume", ckpt)),
            ("medllm-train", _train_args(demo_tok, tmp_path / "o2", 2, "--resume", zipped)),
            ("medllm-evaluate", ["--checkpoint", ckpt, "--benchmarks", "demo", "--output", tmp_path / "ev"]),
            ("medllm-evaluate", ["--checkpoint", exported, "--benchmarks", "demo", "--output", tmp_path / "ev"]),
            ("medllm-generate", ["--checkpoint", zipped, "--prompt", "hi"]),
            ("medllm-export", ["--checkpoint", ckpt, "--output", tmp_path / "hf2"]),
            ("medllm-train", _train_args(tok_file, tmp_path / "o3", 2)),
            ("medllm-train", _train_args(tok_pkl, tmp_path / "o4", 2)),
            ("medllm-train", ["--data_dir", shards, "--tokenizer", demo_tok, "--output", tmp_path / "o5"]),
            ("medllm-prepare-data", ["--datasets", f"pubmed={data_pkl}", "--max_tokens", 1000, "--output", tmp_path / "s1"]),
            ("medllm-tokenizer", ["compare", "--tokenizers", tok_pkl, "--datasets", "sample"])]
    for cli, args in runs:
        r = run_cli(cli, *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (cli, args, r.stderr[-800:])
    # a .jsonl full of pickle bytes is not JSON: every line is a counted skip, and the source is refused as empty
    r = run_cli("medllm-prepare-data", "--datasets", f"pubmed={data_jsonl}", "--max_tokens", 1000, "--output", tmp_path / "s2")
    assert r.returncode == 2 and "yielded no documents" in r.stderr, r.stderr
    assert not marker.exists(), "a crafted pickle ran code"


# ---------------------------------------------------------------------------------------------------------------------
# 4. the disk fills up during a checkpoint: a real write error (a file-size limit on the process)

def _limit_file_size(limit):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)    # the write then fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


@pytest.mark.heavy
def test_checkpoint_write_error_keeps_the_previous_one(short_run, demo_tok, tmp_path):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(short_run, out)
    size = (out / "checkpoint_000004.pt").stat().st_size
    args = [str(BIN / "medllm-train"), *map(str, _train_args(demo_tok, out, 8, "--resume", "latest"))]
    r = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **ONE_THREAD}, preexec_fn=_limit_file_size(size // 2),
                       timeout=600)
    assert r.returncode == 1, r.stderr[-1500:]
    last = r.stderr.strip().splitlines()[-1]
    assert "could not write" in last and "checkpoint_000006.pt" in last and "File too large" in last, last
    assert "checkpoint_000004.pt is intact" in last and "Traceback" not in r.stderr
    assert (out / "latest").read_text().strip() == "checkpoint_000004.pt"
    assert not (out / "checkpoint_000006.pt").exists() and not list(out.glob("*.tmp"))
    assert load_checkpoint(out / "checkpoint_000004.pt")["step"] == 4
    r = run_cli("medllm-train", *_train_args(demo_tok, out, 8, "--resume", "latest"), env=ONE_THREAD)   # space again
    assert r.returncode == 0 and load_checkpoint(out / "checkpoint_000008.pt")["step"] == 8, r.stderr[-1500:]


# ---------------------------------------------------------------------------------------------------------------------
# 5. bad data, 16 kinds: each a counted skip (in metadata.json and the run summary) or a clear one-line error

SYNTH = {"synth_id": "s1", "language": "en", "query": "What lowers potassium fast?", "synthetic_reasoning": "Insulin shifts it.",
         "synthetic_answer": "Insulin with glucose."}


def _jsonl(*rows):
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


GOOD = {"text": "Aspirin irreversibly inhibits cyclooxygenase, so its antiplatelet effect outlasts the drug itself."}
GOOD2 = {"text": "Naloxone reverses opioid toxicity within minutes but may wear off before the opioid does."}

# name -> (files to write {relative path: bytes}, source, expected: ("skip", {reason: n}, docs) or ("error", text))
BAD_DATA = {
    "invalid_json": ({"d.jsonl": _jsonl(GOOD, b"{not json", GOOD2)}, "pubmed", ("skip", {"invalid_json": 1}, 2)),
    "missing_text": ({"d.jsonl": _jsonl(GOOD, {"title": "no body"}, GOOD2)}, "guidelines", ("skip", {"missing_text": 1}, 2)),
    "null_text": ({"d.jsonl": _jsonl(GOOD, {"text": None})}, "guidelines", ("skip", {"null_text": 1}, 1)),
    "non_string_text": ({"d.jsonl": _jsonl(GOOD, {"text": 42}, {"text": ["a"]})}, "guidelines", ("skip", {"non_string_text": 2}, 1)),
    "empty_string": ({"d.jsonl": _jsonl(GOOD, {"text": "   "})}, "guidelines", ("skip", {"empty_text": 1}, 1)),
    "non_utf8": ({"d.jsonl": _jsonl(GOOD, b'{"text": "caf\xe9 \xff"}')}, "guidelines", ("skip", {"invalid_utf8": 1}, 1)),
    "blank_line": ({"d.jsonl": _jsonl(GOOD, b"   ", GOOD2)}, "guidelines", ("skip", {"blank_line": 1}, 2)),
    "not_an_object": ({"d.jsonl": _jsonl(GOOD, b"[1, 2]")}, "guidelines", ("skip", {"not_an_object": 1}, 1)),
    "huge_line": ({"d.jsonl": _jsonl(GOOD, {"text": "Sepsis is a dysregulated host response. " * 250_000})}, "guidelines",
                  ("skip", {}, 2)),
    "truncated_gzip": ({"d.jsonl.gz": gzip.compress(_jsonl(*[GOOD] * 200))[:-40]}, "guidelines", ("error", "truncated or corrupt")),
    "empty_file": ({"a.jsonl": b"", "b.jsonl": _jsonl(GOOD)}, "guidelines", ("skip", {"empty_file": 1}, 1)),
    "no_data_files": ({"notes.csv": b"a,b\n"}, "guidelines", ("error", "has no data files")),
    "missing_path": ({}, "guidelines", ("error", "no such file or folder")),
    "wrong_column": ({"d.jsonl": _jsonl({"body": "x"}, {"body": "y"})}, "guidelines", ("error", "yielded no documents")),
    "synth_missing_reasoning": ({"d.jsonl": _jsonl(SYNTH, {k: v for k, v in SYNTH.items() if k != "synthetic_reasoning"} | {"synth_id": "s2"})},
                                "synth", ("skip", {"malformed_synth": 1}, 1)),
    "duplicates": ({"d.jsonl": _jsonl(GOOD, GOOD, {"text": "Another document entirely."}, GOOD)}, "guidelines",
                   ("skip", {"duplicate": 2}, 2)),
    "control_chars": ({"d.jsonl": _jsonl({"text": "Heparin\x0c\x00 is\x07 reversed\x1b by protamine."})}, "guidelines",
                      ("skip", {}, 1)),
    "special_token_text": ({"d.jsonl": _jsonl({"text": "Ends here <|endoftext|> and <|answer|> is text."})}, "guidelines",
                           ("skip", {}, 1)),
}


def _prepare(tmp_path, name, files, source, tok="gpt2"):
    d = tmp_path / name
    d.mkdir()
    for rel, data in files.items(): (d / rel).write_bytes(data)
    target = d if name != "missing_path" else d / "nope"
    from medllm.packing import prepare_main
    err, out = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stderr(err), redirect_stdout(out):
        try: prepare_main(list(map(str, ["--datasets", f"{source}={target}", "--tokenizer", tok, "--seq_len", 8, "--max_tokens",
                                         10_000_000, "--epoch_policy", "stop", "--val_fraction", 0, "--output", tmp_path / f"{name}_out"])))
        except SystemExit as e: code = e.code
    return code, err.getvalue(), tmp_path / f"{name}_out"


@pytest.mark.parametrize("name", list(BAD_DATA))
def test_bad_data(name, tmp_path, gpt2_cache, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(gpt2_cache))
    files, source, expected = BAD_DATA[name]
    code, err, out = _prepare(tmp_path, name, files, source)
    if expected[0] == "error":
        assert code == 2 and expected[1] in err and err.strip().count("\n") == 0, (code, err)
        return
    assert code == 0, err
    meta = json.loads((out / "metadata.json").read_text())
    skipped = meta["train"]["skipped"].get(source, {})
    assert skipped == expected[1], skipped
    assert meta["train"]["documents"][source] == expected[2], meta["train"]["documents"]
    if name == "special_token_text":   # the text stays text: no special id appears in the shards
        from medllm.packing import ShardRows
        from medllm.tokenizer import get_tokenizer
        tok = get_tokenizer("gpt2")
        rows = ShardRows(out, "train")
        ids = [int(i) for k in range(len(rows)) for i in rows[k]]
        assert ids.count(tok.special["answer"]) == 0 and "<|answer|>" in tok.decode([i for i in ids if i != tok.eot_id])
    if name == "control_chars":
        from medllm.packing import ShardRows
        from medllm.tokenizer import get_tokenizer
        rows = ShardRows(out, "train")
        text = get_tokenizer("gpt2").decode([int(i) for k in range(len(rows)) for i in rows[k]])
        assert "\x00" not in text and "\x07" not in text and "\x1b" not in text and "\x0c" in text
        assert meta["train"]["cleaned"] == {source: {"control_characters": 1}}, meta["train"].get("cleaned")


def test_every_row_is_accounted_for(tmp_path, gpt2_cache, monkeypatch):
    "All bad kinds in one file: documents + counted skips == rows in the file."
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(gpt2_cache))
    rows = [GOOD, b"{bad", {"title": "x"}, {"text": None}, {"text": 3}, {"text": ""}, b'{"text": "\xff"}', b"  ", b"[1]",
            GOOD2, {"text": "Different."}]
    code, err, out = _prepare(tmp_path, "mixed", {"d.jsonl": _jsonl(*rows)}, "guidelines")
    assert code == 0, err
    meta = json.loads((out / "metadata.json").read_text())["train"]
    assert meta["documents"]["guidelines"] + sum(meta["skipped"]["guidelines"].values()) == len(rows), meta


# ---------------------------------------------------------------------------------------------------------------------
# 6. bad flags through every CLI: exit code 2 and one line, never a traceback

@pytest.fixture(scope="module")
def tiny_ckpt(demo_tok, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_ckpt")
    r = run_cli("medllm-train", *_train_args(demo_tok, out, 1), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-1500:]
    return out / "checkpoint_000001.pt"


def _cases(tok, ckpt, tmp):
    a_file = tmp / "a_file.txt"
    a_file.write_text("x")
    unwritable = a_file / "sub"        # a folder inside a file: no one can create it, not even root
    t = lambda *x: ("train", ["--model", "nano", "--tokenizer", tok, "--max_steps", 1, "--output", tmp / "t", *x])
    p = lambda *x: ("prepare", ["--datasets", "sample", "--tokenizer", tok, "--max_tokens", 1000, "--output", tmp / "p", *x])
    e = lambda *x: ("evaluate", ["--checkpoint", ckpt, "--benchmarks", "demo", "--output", tmp / "e", *x])
    g = lambda *x: ("generate", ["--checkpoint", ckpt, "--prompt", "Aspirin", *x])
    return [
        t("--model", "gigantic"), t("--batch_size", 0), t("--batch_size", -4), t("--max_steps", 0), t("--seq_len", 0),
        t("--seq_len", 4096), t("--batch_tokens", 1000), t("--optimizer", "sgd"), t("--schedule", "zigzag"),
        t("--tokenizer", tmp / "missing.json"), t("--tokenizer", "cl99k"), t("--datasets", "nosuchsource"),
        t("--datasets", "pubmed=/no/such/file.jsonl"), t("--datasets", "sample:-1"), t("--data_dir", "/no/such/dir"),
        t("--resume", "/no/such/checkpoint.pt"), t("--output", unwritable), t("--eval_every", -1), t("--log_every", 0),
        t("--keep_last", 0), t("--val_fraction", 1.5), t("--dtype", "float8"), t("--device", "tpu"), t("--num_workers", -1),
        t("--lr_matrix", "fast"), t("--nonfinite", "ignore"), t("--no_such_flag"), t("--data_dir", a_file),
        t("--loss", "fused"), t("--attention", "fast"), t("--residual", "fp16"), t("--muon_impl", "fused"), t("--muon_impl", "compiled_sym"), t("--cuda_graphs"), t("--cuda_graphs", "--compile"), t("--doc_mask", "--attention", "cudnn"),
        t("--compile_blocks"), t("--fused_adamw", "maybe"), t("--compile_blocks", "--compile", "--cuda_graphs"), t("--compile_blocks", "--compile", "--doc_mask"),
        p("--max_tokens", 0), p("--seq_len", 0), p("--val_fraction", 2), p("--datasets", ""), p("--tokenizer", "nope"),
        p("--output", unwritable), p("--shard_tokens", 0), p("--epoch_policy", "forever"), p("--shuffle_buffer", -1),
        p("--decontaminate", "medqa=/no/such.jsonl"), p("--decontaminate", "nosuchbench=x.jsonl"),
        ("tokenizer", ["train", "--datasets", "sample", "--vocab_size", 10, "--output", tmp / "k.json"]),
        ("tokenizer", ["train", "--datasets", "sample", "--vocab_size", -1, "--output", tmp / "k.json"]),
        ("tokenizer", ["train", "--datasets", "nosuchsource", "--output", tmp / "k.json"]),
        ("tokenizer", ["train", "--datasets", "sample", "--output", unwritable / "k.json"]),
        ("tokenizer", ["train", "--datasets", "sample", "--max_chars", 0, "--output", tmp / "k.json"]),
        ("tokenizer", ["compare", "--tokenizers", "nope", "--datasets", "sample"]),
        ("tokenizer", ["compare", "--datasets", ""]), ("tokenizer", ["cache-gpt2", "/no/such/gpt2"]), ("tokenizer", ["frobnicate"]),
        ("export", ["--checkpoint", tmp / "missing.pt", "--output", tmp / "x"]), ("export", ["--model", "gigantic", "--output", tmp / "x"]),
        ("export", ["--model", "nano", "--tokenizer", "nope", "--output", tmp / "x"]), ("export", ["--output", tmp / "x"]),
        ("export", ["--checkpoint", ckpt, "--output", unwritable]),
        ("generate", ["--checkpoint", tmp / "missing.pt", "--prompt", "x"]), g("--max_new_tokens", -1), g("--temperature", -1),
        g("--top_k", -5), g("--top_p", 1.5), g("--device", "tpu"),
        e("--benchmarks", "usmle3000"), e("--mode", "vibes"), e("--num_questions", 0), e("--num_questions", -3),
        e("--num_questions", 10_000), e("--files", "medqa=/no/such.jsonl", "--benchmarks", "medqa"), e("--files", "garbage"),
        e("--data_dir", "/no/such/dir"), e("--batch_size", 0), e("--reasoning_tokens", -1), e("--output", unwritable),
        ("evaluate", ["--checkpoint", tmp / "missing.pt"]), ("evaluate", ["--checkpoint", tmp]),
        ("report", [tmp / "no_such_run"]),
        ("bench", ["--device", "cpu", "--configs", "huge"]), ("bench", ["--device", "cpu", "--impls", "jax"]),
        ("bench", ["--device", "cpu", "--configs", "nano", "--seq_len", 4096]), ("bench", ["--device", "cpu", "--steps", 0]),
        ("bench", ["--device", "cpu", "--output", unwritable / "b.json"]), ("bench", ["--device", "tpu"]),
        ("bench", ["--device", "cpu", "--losses", "fused"]), ("bench", ["--device", "cpu", "--attention", "fast"]),
        ("bench", ["--device", "cpu", "--configs", "nano:2by64"]), ("bench", ["--show", tmp / "no_such.json"]),
        ("bench", ["--show", a_file]), ("bench", ["--device", "cpu", "--profile", -1]),
        ("bench", ["--device", "cpu", "--residual", "fp16"]),
        ("bench", ["--device", "cpu", "--muon_impl", "fused"]),
        ("bench", ["--device", "cpu", "--candidate", "loss=fused"]),
        ("bench", ["--device", "cpu", "--candidate", "huge:loss=lse"]),
        ("bench", ["--device", "cpu", "--configs", "nano", "--candidate", "small:loss=lse"]),
        ("bench", ["--device", "cpu", "--candidate", "blocks=on"]), ("bench", ["--device", "cpu", "--compile", "--candidate", "blocks=on,docs=on"]),
    ]


def _mains():
    from medllm import bench, evaluate, export, packing, report, tokenizer, train
    return {"bench": bench.main, "train": train.main, "prepare": packing.prepare_main, "evaluate": evaluate.main, "generate": export.generate_main,
            "export": export.export_main, "tokenizer": tokenizer.main, "report": report.main}


def test_bad_flags_every_cli(demo_tok, tiny_ckpt, tmp_path):
    mains, failures = _mains(), []
    cases = _cases(demo_tok, tiny_ckpt, tmp_path)
    for name, args in cases:
        err = io.StringIO()
        code = 0
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            try: mains[name](list(map(str, args)))
            except SystemExit as e: code = e.code
            except Exception as e: code = f"crash {type(e).__name__}: {e}"
        msg = err.getvalue().strip()
        leaked = any(x in msg for x in ("Traceback", "Errno", "range()", "NoneType", "has no attribute", "invalid literal"))
        if code != 2 or "\n" in msg or not msg or leaked: failures.append((name, args, code, msg[-300:]))
    assert not failures, "\n".join(map(str, failures))
    assert len(cases) >= 92


@pytest.mark.parametrize("cli,args", [("medllm-train", ["--model", "gigantic"]), ("medllm-evaluate", ["--checkpoint", "/no.pt"]),
                                      ("medllm-prepare-data", ["--max_tokens", "0", "--output", "/tmp/x"])])
def test_bad_flags_in_a_real_process(cli, args):
    r = run_cli(cli, *args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


def test_resume_with_another_tokenizer_is_refused(short_run, tmp_path):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(short_run, out)
    r = run_cli("medllm-train", *_train_args("cl100k", out, 6, "--resume", "latest"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "trained with tokenizer" in r.stderr, r.stderr[-800:]


# ---------------------------------------------------------------------------------------------------------------------
# 7. numerics: an injected NaN or Inf stops the run (last good checkpoint kept) or, with --nonfinite skip, skips the step

# --nonfinite stop reads a step's verdict at the end of the next step, when its update has reached the weights in memory,
# or at its own end before a log line (--log_every 1), evaluation or checkpoint (steps 2 and 4 here). Step 3 (0-based,
# ending at 4) with --log_every 5 must stop before checkpoint 4; step 2 (ending at 3) is read late, at step 3, and named.
@pytest.mark.parametrize("fault,log_every", [("nan_loss@3", 1), ("inf_grad@3", 1), ("nan_loss@3", 5), ("nan_loss@2", 5), ("inf_grad@2", 5)])
def test_nonfinite_stops_and_keeps_the_last_checkpoint(fault, log_every, demo_tok, tmp_path):
    out = tmp_path / "run"
    r = run_cli("medllm-train", *_train_args(demo_tok, out, 6, "--log_every", log_every), env={**ONE_THREAD, "MEDLLM_FAULT": fault})
    assert r.returncode == 1, r.stderr[-1000:]
    last = r.stderr.strip().splitlines()[-1]
    assert ("loss is nan" if "nan" in fault else "gradient norm is inf") in last and f"at step {fault[-1]}" in last, last
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint_000002.pt"]
    recs = [json.loads(l) for l in open(out / "metrics.jsonl")]
    assert recs and all(math.isfinite(v) for rec in recs for v in rec.values() if isinstance(v, float)), recs
    assert torch.isfinite(torch.cat([v.flatten().float() for v in load_checkpoint(out / "checkpoint_000002.pt")["model"].values()])).all()


def test_nonfinite_skip(demo_tok, tmp_path):
    out = tmp_path / "run"
    r = run_cli("medllm-train", *_train_args(demo_tok, out, 6, "--nonfinite", "skip"),
                env={**ONE_THREAD, "MEDLLM_FAULT": "nan_loss@3,inf_grad@4"})
    assert r.returncode == 0, r.stderr[-1000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_steps"] == [3, 4]
    recs = [json.loads(l) for l in open(out / "metrics.jsonl")]
    assert [r["step"] for r in recs if "skipped" in r] == [4, 5]
    params = load_checkpoint(out / "checkpoint_000006.pt")["model"]
    assert torch.isfinite(torch.cat([v.flatten().float() for v in params.values()])).all()
    assert "one wait per step" in r.stdout + r.stderr                       # eager Muon, AdamW not fused: the verdict read first


def test_nonfinite_skip_on_the_device_without_a_wait(demo_tok, tmp_path):
    """With fused AdamW and a compiled Muon (`--fused_adamw on --muon_impl compiled`, here on the CPU) the optimizers skip
    a bad step themselves (`found_inf`), so fit never waits for a verdict: the same steps are skipped and reported (read
    late, each with the tokens seen before it) as by a run that waits for each verdict (eager Muon), and the weights stay
    finite."""
    runs = {}
    for name, extra in (("device", []), ("wait", ["--muon_impl", "eager"])):
        out = tmp_path / name
        args = _train_args(demo_tok, out, 6, "--nonfinite", "skip", "--fused_adamw", "on", "--muon_impl", "compiled", *extra)
        r = run_cli("medllm-train", *args, env={**ONE_THREAD, "MEDLLM_FAULT": "nan_loss@3,inf_grad@4"})
        assert r.returncode == 0, r.stderr[-1000:]
        runs[name] = r, out
    r, out = runs["device"]
    assert "skip a bad step on the device, no wait" in r.stdout + r.stderr
    assert "one wait per step" in runs["wait"][0].stdout + runs["wait"][0].stderr   # eager Muon: the wait stays
    assert json.loads((out / "summary.json").read_text())["skipped_steps"] == [3, 4]
    recs = {name: [json.loads(l) for l in open(o / "metrics.jsonl")] for name, (_, o) in runs.items()}
    skips = {name: [(x["step"], x["tokens"], x["skipped"]) for x in rs if "skipped" in x] for name, rs in recs.items()}
    assert skips["device"] == skips["wait"] and [s[0] for s in skips["device"]] == [4, 5], skips
    params = load_checkpoint(out / "checkpoint_000006.pt")["model"]
    assert torch.isfinite(torch.cat([v.flatten().float() for v in params.values()])).all()


# ---------------------------------------------------------------------------------------------------------------------
# 8. distributed: one torchrun rank killed -> the job ends (no hang); --resume latest continues; another world size is refused

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(n, args, env=None, timeout=300):
    cmd = [str(BIN / "torchrun"), f"--nproc_per_node={n}", "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           "-m", "medllm.train", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ONE_THREAD, **(env or {})}, timeout=timeout)


@pytest.mark.heavy
def test_a_killed_rank_ends_the_job_and_resume_continues(demo_tok, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "run"
    r = _torchrun(2, _train_args(demo_tok, ref, 6))
    assert r.returncode == 0, r.stderr[-2000:]
    t0 = time.time()
    r = _torchrun(2, _train_args(demo_tok, out, 6), env={"MEDLLM_FAULT": "step_end@3@1"})   # rank 1 dies after step 3
    took = time.time() - t0
    assert r.returncode != 0 and took < 120, (r.returncode, took)
    assert "Signals.SIGKILL" in r.stderr or "exitcode  : -9" in r.stderr, r.stderr[-2000:]
    r = _torchrun(2, _train_args(demo_tok, out, 6, "--resume", "latest"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resume: checkpoint_000002.pt" in r.stdout + r.stderr
    assert _same_params(ref, out)
    # one process cannot continue a two-process run: the data position is per process
    r = run_cli("medllm-train", *_train_args(demo_tok, out, 8, "--resume", "latest"), env=ONE_THREAD)
    assert r.returncode == 2 and "written by 2 process(es), this run has 1" in r.stderr, r.stderr[-800:]


# ---------------------------------------------------------------------------------------------------------------------
# 9. offline hub: every hub source fails fast, naming the source and how to pass a local file

def test_every_hub_source_fails_fast_offline(tmp_path):
    from medllm.sources import SOURCES
    hub = [n for n, s in SOURCES.items() if s.hf_id]
    assert len(hub) >= 5
    for name in hub:
        t0 = time.time()
        r = run_cli("medllm-prepare-data", "--datasets", f"{name}:1", "--tokenizer", "cl100k", "--max_tokens", 1000, "--output", tmp_path / name,
                    env={"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"})   # the network is off: nothing listens there
        took = time.time() - t0
        assert r.returncode == 2 and f"source {name!r}" in r.stderr and f"--datasets {name}=" in r.stderr, r.stderr
        assert took < 5 + 4, (name, took)   # the check itself is bounded by 5 s; the rest is the interpreter starting
        assert r.stderr.count("\n") == 1


# ---------------------------------------------------------------------------------------------------------------------
# 10. two runs into one output folder: the second refuses while the first holds the lock

def test_concurrent_runs_into_one_folder(demo_tok, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([str(BIN / "medllm-train"), *map(str, _train_args(demo_tok, out, 400, "--no_progress"))],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, **ONE_THREAD, "PYTHONUNBUFFERED": "1"})
    try:
        for line in first.stdout:                    # wait until the first run is training
            if line.startswith("step 1 |") or "| loss" in line: break
        assert first.poll() is None, "the first run ended before the test could start the second"
        r = run_cli("medllm-train", *_train_args(demo_tok, out, 4))
        assert r.returncode == 2 and "is in use by another run (pid" in r.stderr, (line, r.stdout[-500:], r.stderr[-800:])
        assert first.poll() is None                  # the first run is unharmed
    finally:
        first.kill(); first.wait()
    # the lock dies with its process (even kill -9): the folder is usable again
    r = run_cli("medllm-train", *_train_args(demo_tok, out, 2), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-1000:]


def test_resume_of_a_finished_run(short_run, demo_tok, tmp_path):
    "A scheduler restarting a finished job: nothing to do, exit 0; asking for fewer steps than done: a clear error."
    import shutil
    out = tmp_path / "run"
    shutil.copytree(short_run, out)
    before = (out / "metrics.jsonl").read_text()
    r = run_cli("medllm-train", *_train_args(demo_tok, out, 4, "--resume", "latest"), env=ONE_THREAD)
    assert r.returncode == 0 and "nothing to do" in r.stdout + r.stderr, r.stderr[-800:]
    assert (out / "metrics.jsonl").read_text() == before
    r = run_cli("medllm-train", *_train_args(demo_tok, out, 3, "--resume", "latest"), env=ONE_THREAD)
    assert r.returncode == 2 and "beyond this run's 3 steps" in r.stderr, r.stderr[-800:]
