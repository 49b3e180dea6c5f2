"""Evaluation from outside: loaders, stable samples, the PubMedQA test filter, batched == naive scoring, the CLI, and
medllm vs exported-directory agreement."""
import json
import random

import numpy as np
import pytest
import torch

from medllm.evaluate import (cloze_request, letter_request, load_benchmark, loglikelihoods, loglikelihoods_naive,
                             pubmedqa_test_ids, summarize)
from medllm.export import export_hf
from medllm.model import save_model

from conftest import run_cli


def test_stable_sample_and_loaders(shared_data):
    b = shared_data / "bench_samples"
    for name, f in [("medqa", "medqa_usmle_4opt_sample.jsonl"), ("medmcqa", "medmcqa_validation_sample.jsonl"),
                    ("pubmedqa", "pubmedqa_pqa_labeled_sample.jsonl")]:
        items = load_benchmark(name, b / f)
        assert len(items) == 30 and all(0 <= it.gold < len(it.choices) for it in items)
        ids = [it.id for it in load_benchmark(name, b / f, num_questions=10)]
        assert ids == [it.id for it in load_benchmark(name, b / f, num_questions=10)] and len(set(ids)) == 10
    assert load_benchmark("pubmedqa", b / "pubmedqa_pqa_labeled_sample.jsonl")[0].choices == ["yes", "no", "maybe"]


def test_pubmedqa_filter_keeps_exactly_the_500_test_ids(shared_data, tmp_path):
    test_ids = sorted(pubmedqa_test_ids())
    sample = json.loads(open(shared_data / "bench_samples/pubmedqa_pqa_labeled_sample.jsonl").readline())
    rows = [{**sample, "pubid": int(p)} for p in test_ids] + [{**sample, "pubid": 90_000_000 + i} for i in range(500)]
    random.Random(0).shuffle(rows)
    f = tmp_path / "pqa_labeled_1000.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_benchmark("pubmedqa", f)
    assert len(items) == 500 and {it.id for it in items} == set(test_ids)


def test_bad_rows_are_counted_and_bad_requests_are_errors(tmp_path):
    from collections import Counter
    f = tmp_path / "medqa.jsonl"
    good = {"question": "q?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "B", "answer": "b"}
    f.write_text("\n".join(json.dumps(r) for r in [good, {**good, "answer_idx": "E"}, {k: v for k, v in good.items() if k != "options"}]))
    skips = Counter()
    assert len(load_benchmark("medqa", f, skips=skips)) == 1
    assert skips == {"medqa/answer_outside_options": 1, "medqa/missing_options": 1}
    with pytest.raises(ValueError, match="larger than"):
        load_benchmark("medqa", f, num_questions=5)


def test_batched_scoring_equals_one_forward_per_choice(trained_nano):
    m, tok = trained_nano
    items = load_benchmark("demo")[:6]
    reqs = [(c, x) for it in items for c, xs in (letter_request("demo", it), cloze_request("demo", it)) for x in xs]
    np.testing.assert_allclose(loglikelihoods(m, tok, reqs, batch_size=7), loglikelihoods_naive(m, tok, reqs), rtol=1e-4, atol=1e-4)


def test_summary_figures():
    from medllm.evaluate import Item
    items = [Item(str(i), "q", ["a", "b", "c", "d"], i % 4) for i in range(40)]
    recs = [{"pred": it.gold if k < 20 else (it.gold + 1) % 4, "gold": it.gold, "pred_norm": it.gold} for k, it in enumerate(items)]
    s = summarize("x", items, recs, "cloze")
    assert s["acc"] == 0.5 and s["acc_norm"] == 1.0 and s["chance"] == 0.25 and abs(s["centered_acc"] - 1 / 3) < 1e-9
    assert s["ci95"][0] < 0.5 < s["ci95"][1] and s["above_chance"]


def test_cli_writes_results_and_export_gives_identical_predictions(trained_nano, shared_data, tmp_path):
    m, tok = trained_nano
    ck = save_model(tmp_path / "m.pt", m, tok)
    export_hf(m, tok, tmp_path / "hf")
    outs = {}
    for label, path in (("pt", ck), ("hf", tmp_path / "hf")):
        r = run_cli("medllm-evaluate", "--checkpoint", path, "--benchmarks", "medqa,medmcqa,pubmedqa,demo", "--data_dir",
                    shared_data / "bench_samples", "--mode", "letter,cloze,reasoning", "--num_questions", 10,
                    "--reasoning_tokens", 16, "--output", tmp_path / label, "--device", "cpu")
        assert r.returncode == 0, r.stderr[-2000:]
        outs[label] = [json.loads(l) for l in open(tmp_path / label / "predictions.jsonl")]
    res = json.loads((tmp_path / "pt" / "results.json").read_text())
    assert len(res["results"]) == 12 and {"acc", "ci95", "chance", "majority", "centered_acc", "n"} <= set(res["results"][0])
    assert all("acc_norm" in r for r in res["results"] if r["mode"] != "letter")
    assert (tmp_path / "pt" / "results.html").stat().st_size > 100_000
    assert [(p["id"], p["mode"], p["pred"]) for p in outs["pt"]] == [(p["id"], p["mode"], p["pred"]) for p in outs["hf"]]
    assert any(p.get("reasoning") for p in outs["pt"] if p["mode"] == "reasoning")


@pytest.mark.parametrize("args,needle", [
    (["--benchmarks", "usmle"], "unknown benchmark 'usmle'"),
    (["--mode", "vibes"], "unknown mode 'vibes'"),
    (["--benchmarks", "medqa", "--data_dir", "/no/such/dir"], "--data_dir not found"),
    (["--benchmarks", "medqa", "--files", "medqa=/no/file.jsonl"], "benchmark file for medqa not found"),
    (["--benchmarks", "demo", "--num_questions", "1000"], "larger than"),
])
def test_cli_bad_input_is_one_line_exit_2(args, needle, trained_nano, tmp_path):
    m, tok = trained_nano
    ck = save_model(tmp_path / "m.pt", m, tok)
    r = run_cli("medllm-evaluate", "--checkpoint", ck, "--output", tmp_path / "o", *args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr


def test_demo_quiz_contexts_script_agrees_with_evaluate(trained_nano, tmp_path):
    "benchmarks/demo_quiz_contexts.py: its quiz-question row is medllm-evaluate's cloze score, and every context is reported."
    import re
    import subprocess
    import sys
    from conftest import REPO as ROOT
    from medllm.evaluate import evaluate
    m, tok = trained_nano
    ck = save_model(tmp_path / "m.pt", m, tok)
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "demo_quiz_contexts.py"), "--checkpoint", str(ck)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([0-9.]+) \|", r.stdout, re.M))
    assert set(rows) == {"the quiz question", "no question", "the training query, verbatim",
                         "training query + reasoning, reasoning format", "mutual information (quiz question − no question)"}
    cloze = evaluate(m, tok, ["demo"], ["cloze"], log=lambda *a: None)["results"][0]
    assert abs(float(rows["the quiz question"]) - cloze["acc"]) < 1e-3
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "demo_quiz_contexts.py"), "--checkpoint", "/no/such.pt"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
