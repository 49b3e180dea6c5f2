"""The data pipeline from outside: prepare-data shares and metadata, stream == shards, resumable loaders,
decontamination, bad input and bad data."""
import gzip
import itertools
import json
import os
import time

import numpy as np
import pytest
import torch

from medllm.packing import DataConfig, Pipeline, ShardRows, TokenRows, make_loader, prepare_data, read_metadata

from conftest import run_cli


@pytest.fixture(scope="module")
def mix3(shared_data):
    return (f"pubmed={shared_data}/pubmed_abstracts,guidelines={shared_data}/guidelines,"
            f"textbooks={shared_data}/textbooks")


@pytest.fixture(scope="module")
def shards(tmp_path_factory, mix3):
    out = tmp_path_factory.mktemp("shards")
    r = run_cli("medllm-prepare-data", "--datasets", mix3, "--max_tokens", 2_000_000, "--output", out, "--seq_len", 512)
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def test_prepare_data_shares_match_weights_and_metadata_records_them(shards):
    out, stdout = shards
    meta = read_metadata(out)
    t = meta["train"]
    assert t["rows"] * 513 == t["tokens_total"] and t["tokens_total"] > 1_990_000
    assert set(t["weights"]) == {"pubmed", "guidelines", "textbooks"}
    for name, w in t["weights"].items():
        assert abs(t["shares"][name] - w) < 0.02, (name, t["shares"][name], w)
    assert sum(t["tokens"].values()) == t["tokens_total"]
    assert meta["dtype"] == "uint32" and meta["n_vocab"] == 100280  # cl100k does not fit uint16
    assert meta["tokenizer"]["name"] == "cl100k" and meta["special"]["answer"] == 100279
    assert {s["name"] for s in meta["sources"]} == {"pubmed", "guidelines", "textbooks"}
    assert meta["validation"]["rows"] >= 1 and meta["train"]["packing"]["dropped_fraction"] < 0.12
    assert "weight 0.444  share 0.4" in stdout
    sizes = sum((out / f["file"]).stat().st_size for f in t["files"])
    assert sizes == t["tokens_total"] * 4


def test_streaming_equals_shards_token_for_token(shards):
    out, _ = shards
    meta = read_metadata(out)
    cfg = DataConfig(**meta["config"])
    shard = ShardRows(out)
    streamed = list(itertools.islice(Pipeline(cfg).rows(), len(shard)))
    assert len(streamed) == len(shard)
    assert all(np.array_equal(shard[i], streamed[i]) for i in range(len(shard)))
    via_loader = list(itertools.islice(TokenRows(cfg), 50))
    assert all(torch.equal(via_loader[i], torch.from_numpy(shard[i].astype(np.int64))) for i in range(50))
    val = ShardRows(out, "validation")
    val_streamed = list(itertools.islice(Pipeline(cfg).rows(split="validation"), len(val)))
    assert all(np.array_equal(val[i], val_streamed[i]) for i in range(len(val)))


@pytest.mark.parametrize("mode", ["shards", "streaming"])
def test_loader_resume_continues_with_the_next_batch(mode, shards):
    out, _ = shards
    cfg = DataConfig(**read_metadata(out)["config"]) if mode == "streaming" else None
    kw = {"cfg": cfg} if cfg else {"data_dir": out}
    full = list(itertools.islice(make_loader(TokenRows(**kw, batch_size=3), 3, num_workers=2), 11))
    for k in (1, 4, 7):
        resumed = list(itertools.islice(make_loader(TokenRows(**kw, batch_size=3, start_batch=k), 3, num_workers=2), 11 - k))
        assert len(resumed) == 11 - k
        assert all(torch.equal(a, b) for a, b in zip(full[k:], resumed)), (mode, k)
    assert full[0].shape == (3, 513) and full[0].dtype == torch.int64


def test_shard_readers_are_disjoint_rows(shards):
    out, _ = shards
    seen = []
    for rank in range(2):
        ds = TokenRows(data_dir=out, rank=rank, world_size=2, split="validation")
        seen += [tuple(r.tolist()) for r in ds]
    assert len(seen) == len(ShardRows(out, "validation"))
    assert len(set(seen)) == len(seen)                  # disjoint: no row read by both ranks


def test_decontamination_drops_planted_benchmark_copies(shared_data, tmp_path):
    medqa = [json.loads(l) for l in open(shared_data / "bench_samples/medqa_usmle_4opt_sample.jsonl")]
    pqa = [json.loads(l) for l in open(shared_data / "bench_samples/pubmedqa_pqa_labeled_sample.jsonl")]
    rows = [{"text": f"Study notes {i}. " + "The liver makes bile and stores glycogen. " * 20} for i in range(40)]
    rows += [{"text": "Practice question. " + medqa[i]["question"] + " Discuss."} for i in range(3)]
    rows += [{"text": "Reading: " + pqa[0]["context"]["contexts"][0]}]
    f = tmp_path / "notes.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    abstracts = tmp_path / "abs.jsonl"
    test_id = open(shared_data / "bench_samples/pubmedqa_test_pubids.txt").read().split()[0]
    abstracts.write_text(json.dumps({"pmid": test_id, "title": "A PubMedQA test abstract", "abstract": "Body."}) + "\n" +
                         "".join(json.dumps({"pmid": str(i), "title": f"T{i}", "abstract": "Other body text here."}) + "\n" for i in range(30)))
    bench = (f"medqa={shared_data}/bench_samples/medqa_usmle_4opt_sample.jsonl,"
             f"pubmedqa={shared_data}/bench_samples/pubmedqa_pqa_labeled_sample.jsonl")
    out = tmp_path / "out"
    r = run_cli("medllm-prepare-data", "--datasets", f"notes={f},pubmed={abstracts}", "--max_tokens", 20_000, "--seq_len", 128,
                "--output", out, "--decontaminate", bench, "--epoch_policy", "stop", "--val_fraction", 0)
    assert r.returncode == 0, r.stderr
    meta = read_metadata(out)
    assert meta["train"]["decontamination"] == {"notes/ngram": 4, "pubmed/pmid": 1}
    assert "decontamination dropped" in r.stdout
    from medllm.tokenizer import get_tokenizer
    tok = get_tokenizer("cl100k")
    text = \
        "".join(tok.decode(ShardRows(out)[i].tolist()) for i in range(len(ShardRows(out))))
    assert "Practice question" not in text and "A PubMedQA test abstract" not in text and "Study notes" in text


def test_bad_rows_are_counted_in_metadata(tmp_path):
    d = tmp_path / "messy"
    d.mkdir()
    (d / "a.jsonl").write_bytes(b'{"text": "' + b"fine words " * 40 + b'"}\n{broken\n{"text": null}\n\xff\n{"body": "x"}\n')
    (d / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "' + b"more words " * 40 + b'"}\n{"text": ""}\n'))
    (d / "empty.jsonl").write_text("")
    out = tmp_path / "out"
    r = run_cli("medllm-prepare-data", "--datasets", f"messy={d}", "--max_tokens", 300, "--seq_len", 64, "--output", out, "--val_fraction", 0)
    assert r.returncode == 0, r.stderr
    assert read_metadata(out)["train"]["skipped"] == {"messy": {"invalid_json": 1, "null_text": 1, "invalid_utf8": 1, "missing_text": 1,
                                                                "empty_text": 1, "empty_file": 1}}
    assert "skipped rows" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["--datasets", "pubmedx", "--max_tokens", "1000", "--output", "OUT"], "unknown source 'pubmedx': use one of synth, pubmed"),
    (["--datasets", "notes=/no/such/dir", "--max_tokens", "1000", "--output", "OUT"], "no such file or folder for 'notes': /no/such/dir"),
    (["--datasets", "sample:-1", "--max_tokens", "1000", "--output", "OUT"], "negative"),
    (["--datasets", "sample:0", "--max_tokens", "1000", "--output", "OUT"], "sum to zero"),
    (["--datasets", "sample", "--max_tokens", "0", "--output", "OUT"], "--max_tokens must be positive"),
    (["--datasets", "sample", "--max_tokens", "1000", "--seq_len", "-5", "--output", "OUT"], "--seq_len must be positive"),
    (["--datasets", "sample", "--max_tokens", "1000", "--output", "/etc/hostname"], "exists and is not a folder"),
    (["--datasets", "sample", "--max_tokens", "1000", "--tokenizer", "bpe9", "--output", "OUT"], "unknown tokenizer 'bpe9'"),
    (["--datasets", "sample", "--max_tokens", "1000", "--decontaminate", "medqa=/no/file.jsonl", "--output", "OUT"], "benchmark file not found"),
    (["--datasets", "sample", "--max_tokens", "1000", "--epoch_policy", "loop", "--output", "OUT"], "invalid choice"),
])
def test_prepare_data_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    args = [str(tmp_path / "o") if a == "OUT" else a for a in args]
    r = run_cli("medllm-prepare-data", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in r.stderr, r.stderr


def test_hub_unreachable_fails_fast_with_a_hint(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens on the discard port: connection refused at once
    import subprocess, sys
    from conftest import BIN
    t0 = time.time()
    r = subprocess.run([str(BIN / "medllm-prepare-data"), "--datasets", "synth", "--max_tokens", "1000", "--output", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert time.time() - t0 < 15
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "source 'synth'" in r.stderr and "--datasets synth=path/to/file.jsonl" in r.stderr
