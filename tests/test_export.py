"""Export to transformers from outside: the CLI, logit parity for nano/tiny/small at init and after training,
AutoTokenizer id equality, ablations refused, and medllm-generate on checkpoints and exported directories."""
import json
import random

import pytest
import torch
from hypothesis import given, settings, strategies as st

from medllm.core import demo_corpus
from medllm.export import check_hf_parity, export_hf, load_model
from medllm.model import GPT, get_config, pad_vocab, save_model
from medllm.reasoning import synth_parts, to_text
from medllm.tokenizer import get_tokenizer

from conftest import run_cli


def _parity_line(stdout: str) -> dict:
    return json.loads([l for l in stdout.splitlines() if l.startswith("{")][-1])


@pytest.mark.parametrize("name", ["nano", "tiny", "small"])
def test_export_cli_at_init_loads_in_transformers_with_equal_logits(name, tmp_path):
    r = run_cli("medllm-export", "--model", name, "--output", tmp_path / name, "--check")
    assert r.returncode == 0, r.stderr
    res = _parity_line(r.stdout)
    assert res["arch"] == "Qwen3ForCausalLM"
    assert res["max_abs_logit_diff"] < 1e-4, res
    assert res["tokenizer_ids_equal"] and res["specials_in_text"] == 5


def _few_steps(name: str, steps: int, tok) -> GPT:
    "A preset after `steps` AdamW steps on the demo corpus, so no tensor is at its initial value."
    ids = torch.tensor([i for t in tok.encode_batch([to_text(synth_parts(r)) for r in demo_corpus()[:40]], append_eot=True) for i in t])
    torch.manual_seed(0)
    m = GPT(get_config(name, vocab_size=pad_vocab(tok.n_vocab), seq_len=64))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - 65, (2,))
        b = torch.stack([ids[s:s + 65] for s in starts])
        loss = m(b[:, :-1], b[:, 1:]); opt.zero_grad(); loss.backward(); opt.step()
    assert all(p.any() for n, p in m.named_parameters() if n.endswith("o_proj.weight"))  # left init
    return m


@pytest.mark.parametrize("name,steps", [("nano", 5), ("tiny", 3), ("small", 2)])
def test_export_cli_after_training_steps(name, steps, tmp_path):
    tok = get_tokenizer("cl100k")
    m = _few_steps(name, steps, tok)
    ck = save_model(tmp_path / "ck.pt", m, tok, step=steps)
    r = run_cli("medllm-export", "--checkpoint", ck, "--output", tmp_path / "hf", "--check")
    assert r.returncode == 0, r.stderr
    res = _parity_line(r.stdout)
    assert res["max_abs_logit_diff"] < 1e-4 and res["tokenizer_ids_equal"], res


def test_trained_tokenizer_exports_with_identical_ids(trained_nano, tmp_path):
    from transformers import AutoTokenizer
    m, tok = trained_nano
    export_hf(m, tok, tmp_path)
    res = check_hf_parity(m, tok, tmp_path)
    assert res["max_abs_logit_diff"] < 1e-4 and res["tokenizer_ids_equal"]
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    rng = random.Random(0)
    pools = [(0x20, 0x7E), (0x09, 0x0D), (0xA0, 0x24F), (0x370, 0x3FF), (0x4E00, 0x4FFF), (0x1F300, 0x1F64F), (0x30, 0x39)]
    for _ in range(500):
        s = "".join(chr(rng.randint(*rng.choice(pools))) for _ in range(rng.randint(0, 50)))
        assert hf(s, add_special_tokens=False)["input_ids"] == tok.encode(s), repr(s)


@pytest.fixture(scope="module")
def hf_cl100k(tmp_path_factory):
    from transformers import AutoTokenizer
    tok = get_tokenizer("cl100k")
    d = tmp_path_factory.mktemp("cl100k")
    torch.manual_seed(0)
    export_hf(GPT(get_config("nano", vocab_size=pad_vocab(tok.n_vocab), n_layer=1)), tok, d)
    return tok, AutoTokenizer.from_pretrained(str(d))


@settings(max_examples=500, deadline=None)
@given(s=st.text(max_size=60))
def test_autotokenizer_equals_medllm_on_random_text(hf_cl100k, s):
    """transformers maps special-token text ('<|thinking|>') to its id, as medllm does for prompt text (allowed_special='all');
    medllm's `encode` of training text never does. Hypothesis draws such strings from the code's constants."""
    tok, hf = hf_cl100k
    assert hf(s, add_special_tokens=False)["input_ids"] == tok.enc.encode(s, allowed_special="all")
    if "<|" not in s: assert tok.encode(s) == tok.enc.encode(s, allowed_special="all")


def test_ablations_refuse_to_export(tmp_path):
    tok = get_tokenizer("cl100k")
    m = GPT(get_config("nano", vocab_size=pad_vocab(tok.n_vocab), n_layer=1, mlp="relu2", logit_softcap=15.0))
    ck = save_model(tmp_path / "relu2.pt", m, tok)
    r = run_cli("medllm-export", "--checkpoint", ck, "--output", tmp_path / "out")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "mlp='relu2'" in r.stderr and "logit_softcap=15.0" in r.stderr


def test_generate_cli_on_checkpoint_and_export_agree(trained_nano, tmp_path):
    m, tok = trained_nano
    ck = save_model(tmp_path / "m.pt", m, tok)
    export_hf(m, tok, tmp_path / "hf")
    outs = []
    for path in (ck, tmp_path / "hf"):
        r = run_cli("medllm-generate", "--checkpoint", path, "--prompt", "Which drug reverses opioid overdose?",
                    "--max_new_tokens", 24, "--temperature", 0, "--reasoning", "--device", "cpu")
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert outs[0] == outs[1] and outs[0].strip()
    r = run_cli("medllm-generate", "--checkpoint", ck, "--prompt", "Insulin", "--max_new_tokens", 16,
                "--temperature", 0.8, "--top_k", 40, "--top_p", 0.9, "--seed", 1)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr


@pytest.mark.parametrize("cmd,args,needle", [
    ("medllm-generate", ["--checkpoint", "/no/such.pt", "--prompt", "x"], "checkpoint not found: /no/such.pt"),
    ("medllm-generate", ["--checkpoint", "/no/such.pt", "--prompt", "x", "--max_new_tokens", "0"], "--max_new_tokens must be >= 1"),
    ("medllm-generate", ["--checkpoint", "/no/such.pt", "--prompt", "x", "--temperature", "-1"], "--temperature must be >= 0"),
    ("medllm-generate", ["--checkpoint", "/no/such.pt", "--prompt", "  "], "--prompt is empty"),
    ("medllm-generate", ["--prompt", "x"], "required"),
    ("medllm-export", ["--model", "huge", "--output", "/tmp/never-written"], "unknown model 'huge'"),
    ("medllm-export", ["--model", "nano", "--tokenizer", "bert", "--output", "/tmp/never-written"], "unknown tokenizer 'bert'"),
    ("medllm-export", ["--checkpoint", "/etc/hostname", "--output", "/tmp/never-written"], "is not a readable medllm checkpoint"),
    ("medllm-export", ["--output", "/tmp/x"], "one of the arguments --checkpoint --model is required"),
    ("medllm-export", ["--model", "nano", "--output", "/etc/hostname"], "exists and is not a directory"),
])
def test_cli_bad_input_is_one_line_exit_2(cmd, args, needle):
    r = run_cli(cmd, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in r.stderr, r.stderr
