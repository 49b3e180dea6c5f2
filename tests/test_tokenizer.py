"""Tokenizers from outside: offline loading, special tokens, round trips for every kind, the CLI."""
import json
import os
import subprocess
import sys

import pytest
import tiktoken
from hypothesis import given, settings, strategies as st

from medllm.reasoning import SPECIAL_TOKENS, synth_parts, to_text
from medllm.tokenizer import get_tokenizer, save_tokenizer, source_texts, train_tokenizer

from conftest import run_cli

NO_NETWORK = ("import socket\n"
              "def _blocked(*a, **k): raise OSError('network disabled in this test')\n"
              "socket.socket.connect = _blocked; socket.create_connection = _blocked\n")


def test_cl100k_loads_with_no_network():
    code = NO_NETWORK + ("from medllm.tokenizer import get_tokenizer\n"
                         "t = get_tokenizer('cl100k'); print(t.n_vocab, t.special['answer'], len(t.encode('hello world')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "TIKTOKEN_CACHE_DIR": "/nonexistent-cache"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["100280", "100279", "2"]


@pytest.fixture(scope="module")
def trained_8k(tmp_path_factory, shared_data):
    "A tokenizer trained through the CLI on files under shared/data, then loaded back by path."
    out = tmp_path_factory.mktemp("tok") / "med8k.json"
    r = run_cli("medllm-tokenizer", "train", "--datasets",
                f"{shared_data}/guidelines/ngc_public_domain_guidelines.jsonl,{shared_data}/textbooks/openstax_nursing_ccby.jsonl",
                "--vocab_size", 8192, "--output", out)
    assert r.returncode == 0, r.stderr
    assert "8,192-token BPE" in r.stdout
    return out


@pytest.fixture(scope="module", params=["cl100k", "gpt2-name", "gpt2-folder", "trained"])
def tok(request, shared_data, trained_8k, gpt2_cache):
    if request.param == "cl100k": return get_tokenizer("cl100k")
    if request.param == "gpt2-name":
        old = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(gpt2_cache)
        try: return get_tokenizer("gpt2")
        finally:
            if old is None: os.environ.pop("TIKTOKEN_CACHE_DIR")
            else: os.environ["TIKTOKEN_CACHE_DIR"] = old
    if request.param == "gpt2-folder": return get_tokenizer(shared_data / "tokenizers" / "gpt2")
    return get_tokenizer(str(trained_8k))


def test_special_tokens_are_single_distinct_ids(tok):
    assert set(tok.special) == {"question", "thinking", "answer", "endoftext"}
    assert len(set(tok.special.values())) == 4
    for name, marker in SPECIAL_TOKENS.items():
        assert tok.encode_parts([marker]) == [tok.special[name]]
        assert tok.decode([tok.special[name]]) == str(marker)
    assert max(tok.special.values()) < tok.n_vocab


def test_marker_text_in_data_is_ordinary_text(tok):
    ids = tok.encode("see <|answer|> here")
    assert not set(ids) & set(tok.special.values())
    assert tok.decode(ids) == "see <|answer|> here"
    batch = tok.encode_batch(["<|endoftext|>", "<|question|> q"], append_eot=True)
    assert [b[-1] for b in batch] == [tok.eot_id] * 2
    assert all(tok.eot_id not in b[:-1] for b in batch)


def test_rendered_document_has_exactly_four_special_ids(tok):
    parts = synth_parts({"query": "Is <|answer|> here?", "synthetic_reasoning": "r <|thinking|>", "synthetic_answer": "a"})
    ids = tok.encode_parts(parts)
    assert [i for i in ids if i in tok.special.values()] == [tok.special[k] for k in ("question", "thinking", "answer", "endoftext")]
    assert tok.decode(ids) == to_text(parts)


@settings(max_examples=1200, deadline=None)
@given(s=st.text(max_size=80))
def test_round_trip_random_unicode(tok, s):
    ids = tok.encode(s)
    assert tok.decode(ids) == s
    assert not set(ids) & set(tok.special.values())


def test_gpt2_matches_tiktoken_reference(shared_data, gpt2_cache, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(gpt2_cache))
    ref = tiktoken.get_encoding("gpt2")
    text = "The patient's HbA1c was 7.2% — start metformin 500 mg."
    for t in (get_tokenizer("gpt2"), get_tokenizer(shared_data / "tokenizers" / "gpt2")):
        assert t.encode(text) == ref.encode_ordinary(text)
        assert t.special["endoftext"] == 50256 and t.n_vocab == 50260


def test_cli_cache_gpt2_then_name_loads_offline(shared_data, tmp_path):
    env = {"TIKTOKEN_CACHE_DIR": str(tmp_path / "cache")}
    r = run_cli("medllm-tokenizer", "cache-gpt2", shared_data / "tokenizers" / "gpt2", env=env)
    assert r.returncode == 0, r.stderr
    code = NO_NETWORK + "from medllm.tokenizer import get_tokenizer; print(get_tokenizer('gpt2').encode('Hello world'))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env})
    assert r.returncode == 0 and r.stdout.strip() == "[15496, 995]", r.stderr


def test_trained_tokenizer_file_is_json_not_pickle(trained_8k):
    doc = json.loads(trained_8k.read_text())
    assert doc["format"] == "medllm-tokenizer" and len(doc["ranks"]) == 8192 - 4
    assert get_tokenizer(str(trained_8k)).n_vocab == 8192


def test_save_load_round_trip(tmp_path):
    t = train_tokenizer(["hypertension and hyperkalaemia"] * 50 + ["aspirin reduces platelet aggregation"] * 50, vocab_size=300)
    back = get_tokenizer(save_tokenizer(t, tmp_path / "t.json"))
    s = "hyperkalaemia with aspirin"
    assert back.encode(s) == t.encode(s) and back.special == t.special


def test_source_texts_reports_wrong_column(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text('{"abstract": "a"}\n{"abstract": "b"}\n')
    with pytest.raises(ValueError, match="yielded no documents from 2 rows.*missing_text.*columns: abstract"):
        source_texts(f"rows={f}")
    assert source_texts(f"rows={f}#abstract") == {"rows": ["a", "b"]}


# ---- the command line: bad input is one line on stderr and exit code 2 ----

@pytest.mark.parametrize("args,needle", [
    (["compare", "--tokenizers", "llama3", "--datasets", "sample"], "unknown tokenizer 'llama3': use one of cl100k, gpt2"),
    (["compare", "--tokenizers", "/no/such/tok.json", "--datasets", "sample"], "tokenizer file not found: /no/such/tok.json"),
    (["compare", "--datasets", "notes=/no/such/file.jsonl"], "no such file or folder for 'notes': /no/such/file.jsonl"),
    (["compare", "--datasets", "pubmedx"], "unknown source 'pubmedx': use one of synth, pubmed"),
    (["compare", "--datasets", "pubmed"], "cannot read MedRAG/pubmed from the Hugging Face hub"),
    (["train", "--datasets", "sample", "--vocab_size", "0", "--output", "/tmp/x.json"], "must be positive"),
    (["train", "--datasets", "sample", "--vocab_size", "100", "--output", "/tmp/x.json"], "vocab_size must be an integer >= 261"),
    (["train", "--datasets", "sample", "--vocab_size", "abc", "--output", "/tmp/x.json"], "invalid int value"),
    (["train", "--datasets", "sample", "--output", "/tmp"], "is a folder"),
    (["tokenize"], "invalid choice"),
    ([], "required"),
    (["cache-gpt2", "/no/such/folder"], "no such folder: /no/such/folder"),
])
def test_cli_bad_input_is_one_line_exit_2(args, needle):
    r = run_cli("medllm-tokenizer", *args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in r.stderr, r.stderr


def test_cli_compare_prints_table(shared_data, trained_8k):
    r = run_cli("medllm-tokenizer", "compare", "--tokenizers", f"cl100k,gpt2={shared_data}/tokenizers/gpt2,med8k={trained_8k}",
                "--datasets", f"pubtator={shared_data}/pubmed_abstracts/pubtator_abstracts.jsonl,sample", "--max_chars", 300000)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("| ")]
    assert lines[0] == "| tokenizer | n_vocab | pubtator | sample |"
    assert [l.split("|")[1].strip() for l in lines[1:]] == ["cl100k", "gpt2", "med8k"]
    for l in lines[1:]:
        bpt = [float(x) for x in l.split("|")[3:5]]
        assert all(2.0 < b < 8.0 for b in bpt), l


def test_cli_demo_runs():
    r = run_cli("medllm-tokenizer", "demo")
    assert r.returncode == 0, r.stderr
    assert "<|question|>" in r.stdout and "(no special id)" in r.stdout and "held-out half" in r.stdout


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "medllm.tokenizer", "compare", "--tokenizers", "nope", "--datasets", "sample"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown tokenizer" in r.stderr
