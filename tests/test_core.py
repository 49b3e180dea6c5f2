import os
import subprocess
import sys

import pytest
import torch

from medllm.core import DistInfo, demo_corpus, demo_quiz, dist_info, get_device, get_dtype, seed_everything


def test_dist_info_from_torchrun_env():
    assert dist_info({}) == DistInfo()
    d = dist_info({"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"})
    assert (d.rank, d.local_rank, d.world_size, d.local_world_size, d.is_main) == (5, 1, 8, 4, False)
    with pytest.raises(ValueError, match="outside"):
        dist_info({"RANK": "3", "WORLD_SIZE": "2"})


def test_print0_only_on_rank_zero():
    code = "from medllm.core import print0; print0('hello')"
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r)}).stdout for r in (0, 1)]
    assert outs == ["hello\n", ""]


def test_device_and_dtype():
    assert get_device("cpu").type == "cpu"
    assert get_dtype(torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="unknown device"):
        get_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            get_device("cuda")


def test_seed_everything_repeats():
    seed_everything(123); a = torch.randn(3)
    seed_everything(123); b = torch.randn(3)
    assert torch.equal(a, b)


def test_demo_assets_are_well_formed():
    rows, quiz = demo_corpus(), demo_quiz()
    assert len(rows) >= 100 and len({r["synth_id"] for r in rows}) == len(rows)
    assert all(r["query"].strip() and r["synthetic_answer"].strip() for r in rows)
    assert any(not r["synthetic_reasoning"] for r in rows)  # the empty-reasoning case is exercised by the demo too
    ids = {r["synth_id"] for r in rows}
    assert len(quiz) >= 20
    for q in quiz:
        assert set(q["options"]) == set("ABCD") and q["options"][q["answer_idx"]] == q["answer"]
        assert q["source_synth_id"] in ids
    assert "<|" not in "".join(r["query"] + r["synthetic_reasoning"] + r["synthetic_answer"] for r in rows)


def test_cli_stops_quietly_when_stdout_reader_goes_away():
    "`medllm-x | head`: exit 0 with nothing on stderr; a broken pipe that is not stdout's stays an error."
    import subprocess
    import sys
    prog = ("from medllm.core import cli\n@cli\ndef main():\n    for i in range(200_000): print('line', i)\n"
            "    if {raise_other}: raise BrokenPipeError('a socket, not stdout')\nmain()\n")
    p = subprocess.Popen([sys.executable, "-c", prog.format(raise_other=False)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"line 0\n"
    p.stdout.close()                                   # the reader goes away; 200k lines do not fit a pipe buffer
    assert p.wait(timeout=60) == 0 and p.stderr.read() == b""
    r = subprocess.run([sys.executable, "-c", prog.format(raise_other=True)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "BrokenPipeError: a socket, not stdout" in r.stderr
