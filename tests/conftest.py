"""Shared fixtures: the course's offline data, the installed CLIs, and no hub access."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    "The course's offline data (../shared/data or $MEDLLM_DATA); required in CI, skipped elsewhere when absent."
    from medllm.core import shared_data_dir
    d = shared_data_dir()
    if d is None:
        if os.environ.get("CI"): pytest.fail("CI must have the shared data folder next to the repository")
        pytest.skip("no shared/data folder (set MEDLLM_DATA)")
    return d


def run_cli(name: str, *args, env=None, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    "Run an installed console script of this environment."
    exe = BIN / name
    assert exe.exists(), f"console script {name} is not installed in {BIN}"
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def gpt2_cache(tmp_path_factory, shared_data) -> Path:
    "A tiktoken cache holding GPT-2's files from shared data, so that the name 'gpt2' loads offline."
    from medllm.tokenizer import seed_gpt2_cache
    return seed_gpt2_cache(shared_data / "tokenizers" / "gpt2", tmp_path_factory.mktemp("tiktoken-cache"))


@pytest.fixture(scope="session")
def trained_nano():
    "A 2-layer nano model with a 1k rustbpe tokenizer after 30 AdamW steps on the demo corpus: weights not at init."
    import math
    import torch
    from medllm.core import demo_corpus
    from medllm.model import GPT, get_config, pad_vocab
    from medllm.reasoning import synth_parts, to_text
    from medllm.tokenizer import train_tokenizer
    texts = [to_text(synth_parts(r)) for r in demo_corpus()]
    tok = train_tokenizer(texts, vocab_size=1024)
    ids = torch.tensor([i for t in tok.encode_batch(texts, append_eot=True) for i in t])
    torch.manual_seed(0)
    m = GPT(get_config("nano", vocab_size=pad_vocab(tok.n_vocab), n_layer=2, seq_len=128))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for step in range(30):
        starts = torch.randint(0, len(ids) - 129, (8,))
        batch = torch.stack([ids[s:s + 129] for s in starts])
        loss = m(batch[:, :-1], batch[:, 1:])
        opt.zero_grad(); loss.backward(); opt.step()
    assert loss.item() < math.log(m.config.vocab_size) - 1.0  # it learned something
    return m.eval(), tok


def _demo_tokenizer(tmp_path_factory, vocab_size: int) -> Path:
    "A BPE trained by medllm-tokenizer on the embedded demo corpus (a real CLI run), shared by the whole session."
    out = tmp_path_factory.mktemp("tok") / f"demo{vocab_size}.json"
    r = run_cli("medllm-tokenizer", "train", "--datasets", "sample", "--vocab_size", vocab_size, "--output", out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def demo_tok(tmp_path_factory) -> Path:
    "A 2,048-token BPE of the demo corpus."
    return _demo_tokenizer(tmp_path_factory, 2048)


@pytest.fixture(scope="session")
def demo_tok_1k(tmp_path_factory) -> Path:
    "A 1,024-token BPE of the demo corpus."
    return _demo_tokenizer(tmp_path_factory, 1024)
