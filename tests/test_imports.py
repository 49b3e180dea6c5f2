"""Every module imports in a fresh interpreter (catches exported code that uses names defined only in notebook cells)."""
import pkgutil
import subprocess
import sys

import medllm


def test_every_module_imports_in_fresh_interpreter():
    mods = [m.name for m in pkgutil.iter_modules(medllm.__path__) if not m.name.startswith("_")]
    assert {"core", "reasoning", "tokenizer"} <= set(mods)
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module('medllm.' + m)\nprint('ok')"
    r = subprocess.run([sys.executable, "-c", code, *mods], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_headless_modules_do_not_import_widgets():
    code = "import sys, medllm.core, medllm.reasoning, medllm.tokenizer; print('ipywidgets' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
