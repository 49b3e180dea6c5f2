"""The project's own checks can fail: a dirty notebook is caught, and nbdev-clean keeps the papermill `parameters` tag."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import BIN, REPO


def _copy_project(dst: Path):
    for name in ("pyproject.toml", "README.md"): shutil.copy(REPO / name, dst / name)
    for name in ("nbs", "medllm", "tools"): shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))


def test_nbdev_clean_keeps_parameters_tag(tmp_path):
    _copy_project(tmp_path)
    nb_path = tmp_path / "nbs" / "99_params.ipynb"
    nb = {"cells": [{"cell_type": "code", "execution_count": 7, "id": "abc", "metadata": {"tags": ["parameters"], "collapsed": True},
                     "outputs": [], "source": ["model = 'nano'"]}],
          "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}
    nb_path.write_text(json.dumps(nb))
    r = subprocess.run([str(BIN / "nbdev-clean"), "--fname", str(nb_path)], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cell = json.loads(nb_path.read_text())["cells"][0]
    assert cell["metadata"] == {"tags": ["parameters"]}  # the tag survives, other cell metadata goes
    assert cell["execution_count"] is None


def test_check_clean_fails_on_dirty_notebook_and_stale_library(tmp_path):
    _copy_project(tmp_path)
    env = {**os.environ, "BIN": str(BIN)}
    ok = subprocess.run(["bash", "tools/check_clean.sh"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    nb_path = tmp_path / "nbs" / "01_reasoning_format.ipynb"
    nb = json.loads(nb_path.read_text())
    nb["cells"][1]["execution_count"] = 3
    nb_path.write_text(json.dumps(nb, indent=1))
    dirty = subprocess.run(["bash", "tools/check_clean.sh"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert dirty.returncode == 1 and "01_reasoning_format.ipynb" in dirty.stdout
    with open(tmp_path / "medllm" / "reasoning.py", "a") as f: f.write("\n# edited by hand\n")
    stale = subprocess.run(["bash", "tools/check_clean.sh"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert stale.returncode == 1 and "medllm/reasoning.py" in stale.stdout
