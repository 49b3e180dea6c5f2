# The two commands of the README:  `make demo` (the main job) and `make test` (every test).
# Each sets up its own virtual environment first (tools/setup_venv.sh).
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: venv demo test test-heavy lint export clean-nbs

venv:
	@VENV=$(VENV) bash tools/setup_venv.sh

## The main job: the job notebook with its CPU defaults (nano model, demo corpus, torchrun), run headless by papermill.
## The executed notebook, the log, metrics, curves and the checkpoint land in runs/demo/.
demo: venv
	mkdir -p runs/demo
	$(BIN)/papermill nbs/runs/train.ipynb runs/demo/train.ipynb --cwd . -p output runs/demo

## Every test, as CI runs it: notebooks clean and exported, every notebook top to bottom, then pytest.
## Without a GPU the notebooks run Triton's kernels in its interpreter (13_kernels): nbdev-test runs several notebooks
## in one worker process, and the interpreter must be chosen before the first of them imports Triton.
test: venv
	BIN=$(BIN) bash tools/check_clean.sh
	$(BIN)/ruff check medllm tools tests benchmarks
	TRITON_INTERPRET=$$($(BIN)/python -c "import torch; print('' if torch.cuda.is_available() else 1)") $(BIN)/nbdev-test --n-workers 2
	$(BIN)/python -m pytest

## Long tests (torchrun, papermill, big tokenizer training, JupyterLab in headless Chromium), excluded from `make test`.
## Debian's chromium is installed first when it is missing (apt-get, as root or through sudo).
test-heavy: venv
	bash tools/ensure_chromium.sh >/dev/null
	$(BIN)/python -m pytest -m heavy

lint: venv
	$(BIN)/ruff check medllm tools tests benchmarks

export: venv
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean
