"""The job notebook run headless by papermill with -p overrides: it launches torchrun, streams the log, plots the run."""
import json

from conftest import REPO, run_cli


def test_papermill_runs_the_job_notebook(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    r = run_cli("papermill", REPO / "nbs/runs/train.ipynb", out / "train.ipynb", "--cwd", REPO, "-p", "output", str(out),
                "-p", "max_steps", "30", "-p", "eval_every", "15", "-p", "tokenizer", "train:1024", "-p", "batch_size", "4",
                "-p", "seq_len", "128", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    nb = json.loads((out / "train.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"])
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))
    assert "torch.distributed.run" in text and "-m medllm.train" in text            # the torchrun command
    assert "nano: " in text and "step 30 | loss" in text and "val loss" in text     # its log, streamed into the notebook
    assert "torchrun exited with 0" in text
    mimes = {k for c in nb["cells"] for o in c.get("outputs", []) for k in o.get("data", {})}
    assert "application/vnd.plotly.v1+json" in mimes                                 # the curves
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 30 and summary["final_loss"] < summary["ln_vocab"] - 1.0
    assert (out / "curves.html").stat().st_size > 100_000 and (out / "checkpoint_000030.pt").is_file()
