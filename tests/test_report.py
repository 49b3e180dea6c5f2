"""Run reports from outside: medllm-report on a real training run (streaming and shards), on an evaluation folder,
on a run still going, and its errors; the headless modules never import ipywidgets."""
import json
import re
import shutil
import subprocess
import sys

import pytest

from medllm.report import fmt

from conftest import run_cli

SECTIONS = ["## Run", "## Configuration", "## Data mix", "## Curves", "## Throughput and MFU", "## Sample generations",
            "## Evaluation", "## Cost"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the machine is small and shared: one thread is faster than two fighting


def _train(tok, out, *data, steps=12):
    r = run_cli("medllm-train", "--model", "nano", "--tokenizer", tok, "--seq_len", 64, "--batch_size", 4, "--max_steps", steps,
                "--eval_every", 6, "--eval_batches", 2, "--log_every", 2, "--warmup_steps", 2, "--output", out, "--no_progress",
                *data, env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo_tok_1k):
    "A streaming run on the demo corpus, evaluated on the demo quiz into run/eval."
    out = _train(demo_tok_1k, tmp_path_factory.mktemp("run") / "run", "--datasets", "sample", "--val_fraction", 0.1)
    r = run_cli("medllm-evaluate", "--checkpoint", out / "checkpoint_000012.pt", "--benchmarks", "demo", "--mode", "letter,reasoning",
                "--reasoning_tokens", 16, "--output", out / "eval", env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _report(path):
    r = run_cli("medllm-report", path)
    assert r.returncode == 0, r.stderr[-3000:]
    return (path / "report.md").read_text(), (path / "report.html").read_text()


def test_training_report_has_every_section_filled_from_the_run(run):
    md, page = _report(run)
    assert [s for s in SECTIONS if s not in md] == []
    assert "not recorded" not in md and "no evaluation in this folder" not in md
    summary = json.loads((run / "summary.json").read_text())
    info = json.loads((run / "run_info.json").read_text())
    results = json.loads((run / "eval" / "results.json").read_text())
    assert f"| final training loss | {fmt(summary['final_loss'])} |" in md
    assert f"| parameters | {info['params']:,} |" in md
    data = summary["data"]                                                            # the run's own per-source counts
    assert f"| sample | 1 | {data['tokens']['sample']:,} | 1 | {data['documents']['sample']:,} |" in md
    assert f"packing dropped {data['packing']['dropped_fraction']:.1%} of tokens" in md
    for r in results["results"]:                                                      # the evaluation table, with its interval
        assert f"| {r['benchmark']} | {r['mode']} | {r['n']} | {fmt(r['acc'])} | {r['ci95'][0]:.3f}–{r['ci95'][1]:.3f} |" in md
        if "ci95_norm" in r: assert f"| {fmt(r['acc_norm'])} | {r['ci95_norm'][0]:.3f}–{r['ci95_norm'][1]:.3f} |" in md
    val = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"val_loss"' in l]
    assert [v["step"] for v in val] == [0, 6, 12]
    assert all(f"| {v['step']} | {v['tokens']:,} | {fmt(v['val_loss'])} |" in md for v in val)
    assert val[-1]["samples"][0]["question"] in md                                    # sample generations
    assert "$0.10 per CPU machine-hour (assumed)" in md
    cost = float(re.search(r"\| cost \(USD\) \| ([0-9.e-]+) \|", md).group(1))
    assert abs(cost - summary["time_s"] / 3600 * 0.10) < 1e-3 * cost                  # time x devices x the stated price
    # self-contained HTML: plotly inline, no external script, the two figures (curves, evaluation)
    assert "<script src=" not in page and len(page) > 3_000_000
    assert page.count("Plotly.newPlot(") == 2


def test_price_flags_change_the_cost(run, tmp_path):
    d = shutil.copytree(run, tmp_path / "copy")
    r = run_cli("medllm-report", d, "--usd_per_cpu_hour", "1.5")
    assert r.returncode == 0, r.stderr
    assert "$1.50 per CPU machine-hour (assumed)" in (d / "report.md").read_text()


def test_evaluation_folder_report(run):
    md, page = _report(run / "eval")
    assert md.startswith("# medllm evaluation report: eval")
    assert "| demo | reasoning | 30 |" in md and "generated reasoning" in md
    assert "cost not computed: results.json does not record the device" in md
    assert page.count("Plotly.newPlot(") == 1


def test_report_of_a_run_still_going(run, tmp_path):
    d = tmp_path / "going"
    d.mkdir()
    shutil.copy(run / "run_info.json", d)
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (d / "metrics.jsonl").write_text("".join(lines[:4]) + lines[4][:20])               # a line half written
    md, _ = _report(d)
    assert "no summary.json: the run is still going" in md and "so far of 12" in md
    assert "no evaluation in this folder" in md


def test_shard_run_reports_tokens_per_source_from_metadata(demo_tok_1k, tmp_path):
    shards = tmp_path / "shards"
    r = run_cli("medllm-prepare-data", "--datasets", "sample", "--tokenizer", demo_tok_1k, "--seq_len", 64, "--max_tokens", 20_000,
                "--val_fraction", 0.1, "--output", shards)
    assert r.returncode == 0, r.stderr
    meta = json.loads((shards / "metadata.json").read_text())
    out = _train(demo_tok_1k, tmp_path / "run", "--data_dir", shards, steps=6)
    md, _ = _report(out)
    n = meta["train"]["tokens"]["sample"]
    assert f"| sample | 1 | {n:,} | 1 |" in md
    assert f"counted by medllm-prepare-data in {shards}" in md and "passes over the shards" in md


@pytest.mark.parametrize("make,needle", [(lambda p: p / "missing", "no such folder"), (lambda p: p, "not a run folder")])
def test_report_errors_are_one_line(tmp_path, make, needle):
    r = run_cli("medllm-report", make(tmp_path))
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_headless_modules_never_import_widgets():
    code = "import sys, medllm.report, medllm.train, medllm.evaluate, medllm.export; print('ipywidgets' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
