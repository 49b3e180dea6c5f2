"""Real torchrun processes (gloo, CPU): 2 ranks x 2 DataLoader workers read disjoint documents that together are the whole input."""
import json
import socket
import subprocess
from collections import Counter
from pathlib import Path

from medllm.sources import iter_documents, parse_datasets

from conftest import BIN


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_ranks_and_workers_read_disjoint_documents_covering_the_input(shared_data, tmp_path):
    spec = f"pubmed={shared_data}/pubmed_abstracts/pubtator_abstracts.jsonl,guidelines={shared_data}/guidelines,sample"
    out = tmp_path / "seen.json"
    r = subprocess.run([str(BIN / "torchrun"), "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
                        str(Path(__file__).parent / "dist_readers.py"), spec, str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["backend"] == "gloo" and res["world_size"] == 2
    by_reader = {}
    for rank_seen in res["seen"]:
        for item in rank_seen:
            reader, n_readers, doc_id = item.split("|", 2)
            assert n_readers == "4"
            by_reader.setdefault(int(reader), []).append(doc_id)
    assert sorted(by_reader) == [0, 1, 2, 3]                      # 2 ranks x 2 workers = 4 distinct readers
    all_ids = [d for ids in by_reader.values() for d in ids]
    dupes = [d for d, n in Counter(all_ids).items() if n > 1]
    assert not dupes, dupes[:5]                                   # disjoint
    expected = {d.doc_id for e in parse_datasets(spec) for d in iter_documents(e, split="all")}
    assert set(all_ids) == expected and len(expected) == 2192 + 53 + 126   # together: the whole input
    assert all(len(ids) > 100 for ids in by_reader.values())
