"""The lab's widgets driven from code, as a person drives them in the browser: set a control's value, press a button,
and check what the widget shows (its figure's data, its HTML) against numbers computed here independently."""
import html
import json
import os
import subprocess

import pytest

from medllm.core import demo_corpus, demo_passages, demo_quiz
from medllm.export import load_model
from medllm.lab import EvalExplorer, GenerationPlayground, MixExplorer, TokenViewer, TrainingDashboard, stream_generate
from medllm.model import generate
from medllm.reasoning import prompt_parts
from medllm.tokenizer import get_tokenizer, load_tokenizer_file

from conftest import BIN, run_cli

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def live_run(tmp_path_factory, demo_tok_1k):
    "A medllm-train run watched by a TrainingDashboard from before it starts; what the dashboard's figure went through."
    out = tmp_path_factory.mktemp("live") / "run"
    dash = TrainingDashboard(out)
    seen = []
    dash.fig.data[0].on_change(lambda trace, x: seen.append(len(x)), "x")
    status_before = dash.status.value
    dash.watch(interval=0.1)
    p = subprocess.Popen([str(BIN / "medllm-train"), "--model", "nano", "--tokenizer", str(demo_tok_1k), "--datasets", "sample",
                          "--seq_len", "64", "--batch_size", "4", "--max_steps", "24", "--eval_every", "12", "--eval_batches", "2",
                          "--val_fraction", "0.1", "--log_every", "1", "--warmup_steps", "2", "--output", str(out), "--no_progress"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **ONE_THREAD})
    try: log, _ = p.communicate(timeout=600)
    finally:
        if p.poll() is None: p.kill()
    finished = dash.join(timeout=30)
    dash.stop()
    assert p.returncode == 0, log[-3000:]
    return {"dir": out, "dash": dash, "seen": seen, "status_before": status_before, "finished": finished}


@pytest.fixture(scope="module")
def evaluated(live_run):
    out = live_run["dir"] / "eval"
    r = run_cli("medllm-evaluate", "--checkpoint", live_run["dir"] / "checkpoint_000024.pt", "--benchmarks", "demo",
                "--mode", "letter,cloze,reasoning", "--reasoning_tokens", 16, "--output", out, env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


# --- token viewer ------------------------------------------------------------------------------------------------

def test_token_viewer_follows_the_text(demo_tok_1k):
    small = load_tokenizer_file(demo_tok_1k)
    cl = get_tokenizer("cl100k")
    v = TokenViewer("x", tokenizers={"cl100k": cl, "bpe1k": small})
    text = "Furosemide causes hypokalaemia; spironolactone spares potassium."
    v.text.value = text
    n_bytes = len(text.encode())
    expected = [n_bytes / len(cl.encode(text)), n_bytes / len(small.encode(text))]
    assert list(v.fig.data[0].y) == pytest.approx(expected)                # the chart
    assert expected[0] > expected[1]                                        # a 1k vocabulary cuts medical words finer
    assert v.views["bpe1k"].value.count('class="medllm-tok"') == len(small.encode(text))   # one span per token
    for i in small.encode(text): assert f'title="id {i} · ' in v.views["bpe1k"].value
    v.text.value = "<|thinking|>"
    assert [r["tokens"] for r in v.stats()] == [1, 1]                      # one special id
    v.markers.value = False
    assert [r["tokens"] for r in v.stats()] == [len(cl.encode("<|thinking|>")), len(small.encode("<|thinking|>"))]
    assert "background:#333" not in v.views["cl100k"].value                 # ordinary text, not the marker


# --- data-mix explorer -------------------------------------------------------------------------------------------

@pytest.fixture
def two_sources(tmp_path):
    (tmp_path / "synth.jsonl").write_text("".join(json.dumps(r) + "\n" for r in demo_corpus()))
    (tmp_path / "passages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in demo_passages()))
    return f"synth={tmp_path}/synth.jsonl:0.9,passages={tmp_path}/passages.jsonl:0.1"


def test_mix_explorer_sliders_plan_and_the_mixer_delivers(two_sources, demo_tok_1k):
    m = MixExplorer(two_sources, tokenizer=load_tokenizer_file(demo_tok_1k), budget=1e6, seq_len=128)
    assert list(m.fig.data[0].y) == pytest.approx([0.9, 0.1])
    m.sliders["synth"].value, m.sliders["passages"].value = 0.3, 0.9     # set two sliders ...
    assert list(m.fig.data[0].y) == pytest.approx([0.25, 0.75])          # ... the planned share follows
    assert "250,000" in m.table.value and "750,000" in m.table.value     # tokens of a 1M budget
    m.budget.value = 1e8
    assert "25,000,000" in m.table.value
    got = m.measure(rows=40)                                             # the real mixer with these weights
    assert got["passages"] == pytest.approx(0.75, abs=0.1) and list(m.fig.data[1].y) == pytest.approx([got["synth"], got["passages"]])
    m.sliders["synth"].value = 0.5
    assert list(m.fig.data[1].y) == [None, None]                          # a measurement is dropped when the weights move
    for s in m.sliders.values(): s.value = 0.0
    assert list(m.fig.data[0].y) == [0.0, 0.0] and m.measure() == {} and "every weight is 0" in m.status.value


def test_mix_explorer_samples_are_token_ids_as_the_model_sees_them(two_sources, demo_tok_1k):
    small = load_tokenizer_file(demo_tok_1k)
    m = MixExplorer(two_sources, tokenizer=small, sample_tokens=10_000)
    first = m.samples.value
    synth_part, passage_part = first.split("<hr>")
    assert f'title="id {small.special["question"]} · ' in synth_part           # SYNTH rows: rendered with special tokens
    assert f'title="id {small.special["endoftext"]} · ' in passage_part        # text documents end in <|endoftext|>
    assert f'title="id {small.special["question"]} · ' not in passage_part
    m.next_button.click()                                                       # the button draws the next documents
    assert m.samples.value != first
    ids = m.sample("passages")
    assert small.decode(ids).endswith("<|endoftext|>")


def test_mix_explorer_shows_why_a_source_has_no_sample(demo_tok_1k, tmp_path):
    (tmp_path / "empty.jsonl").write_text(json.dumps({"text": "   "}) + "\n")
    m = MixExplorer(f"sample:0.5,empty={tmp_path}/empty.jsonl:0.5", tokenizer=load_tokenizer_file(demo_tok_1k))
    assert "<b>empty</b>: <i>no sample (" in m.samples.value and "<b>sample</b> <small>" in m.samples.value


# --- training dashboard ------------------------------------------------------------------------------------------

def test_dashboard_refreshed_while_the_run_went(live_run):
    dash, seen = live_run["dash"], live_run["seen"]
    recs = [json.loads(l) for l in (live_run["dir"] / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if "loss" in r]
    assert "waiting for metrics.jsonl" in live_run["status_before"] and live_run["finished"]
    assert len(train) == 24 and seen[-1] == 24
    assert any(0 < n < 24 for n in seen), seen                           # it drew partial curves during the run
    assert list(dash.fig.data[0].x) == [r["step"] for r in train] and list(dash.fig.data[0].y) == [r["loss"] for r in train]
    assert list(dash.fig.data[1].x) == [0, 12, 24]                        # validation points
    assert list(dash.fig.data[2].y) == [r["lr_mult"] for r in train]       # learning rate
    assert list(dash.fig.data[3].y) == [r["tokens_per_s"] for r in train]  # throughput
    assert list(dash.fig.data[4].y) == []                                  # MFU: no peak on a CPU ...
    assert next(a for a in dash.fig.layout.annotations if a.name == "mfu-note").visible   # ... and it says so
    assert "(finished)" in dash.status.value and "step 24 / 24" in dash.status.value


def test_dashboard_reads_a_half_written_metrics_line(tmp_path):
    lines = ['{"step": 1, "tokens": 10, "loss": 3.0, "lr_mult": 1.0, "tokens_per_s": 100.0, "mfu": 0.25, "time": 1.0}\n',
             '{"step": 2, "tokens": 20, "loss": 2.5, "lr_mult": 1.0, "tokens_per_s": 110.0, "mfu": 0.3, "time": 2.0}\n']
    (tmp_path / "metrics.jsonl").write_text(lines[0] + lines[1][:30])
    dash = TrainingDashboard(tmp_path)
    assert list(dash.fig.data[0].y) == [3.0] and "(running)" in dash.status.value
    with open(tmp_path / "metrics.jsonl", "a") as f: f.write(lines[1][30:])
    assert dash.refresh() == 1 and list(dash.fig.data[0].y) == [3.0, 2.5]
    assert list(dash.fig.data[4].y) == pytest.approx([25.0, 30.0])        # MFU in percent, when the run measured it
    assert not next(a for a in dash.fig.layout.annotations if a.name == "mfu-note").visible
    assert dash.refresh() == 0


def test_dashboard_follows_a_rewritten_metrics_file(tmp_path):
    rec = lambda step, loss: json.dumps({"step": step, "tokens": step, "loss": loss, "lr_mult": 1.0, "tokens_per_s": 1.0, "time": 1.0}) + "\n"
    (tmp_path / "metrics.jsonl").write_text(rec(1, 3.0) + rec(2, 2.0) + rec(3, 1.0))
    dash = TrainingDashboard(tmp_path)
    assert list(dash.fig.data[0].y) == [3.0, 2.0, 1.0]
    (tmp_path / "metrics.jsonl").write_text(rec(1, 5.0))                 # a new run in the same folder (or a resume's trim)
    assert dash.refresh() == 1 and list(dash.fig.data[0].y) == [5.0]


# --- generation playground ---------------------------------------------------------------------------------------

def test_playground_pick_a_checkpoint_and_stream(live_run):
    ckpt = live_run["dir"] / "checkpoint_000024.pt"
    pg = GenerationPlayground(search=live_run["dir"].parent)
    assert str(ckpt) in pg.path.options and pg.button.disabled
    pg.path.value = str(ckpt)                                              # pick it
    assert not pg.button.disabled and pg.model is not None
    updates = []
    pg.output.observe(lambda ch: updates.append(ch["new"]), "value")
    pg.max_new_tokens.value = 20
    pg.button.click()                                                      # the button generates
    model, tok = load_model(ckpt)
    want = generate(model.eval(), [tok.encode_parts(prompt_parts(pg.prompt.value))], 20, stop_ids=[tok.eot_id])[0]
    assert len(want) > 0
    changes = sum(k == 1 or tok.decode(want[:k]) != tok.decode(want[:k - 1]) for k in range(1, len(want) + 1))
    assert len(updates) == changes + 1                                     # streamed: one update per visible token, one at the end
    assert html.escape(tok.decode(want)) in updates[-1] and f"{len(want)} tokens in" in updates[-1]
    pg.reasoning.value = False
    assert pg.prompt_ids() == tok.encode(pg.prompt.value)                 # plain continuation: no markers


def test_stream_generate_matches_generate(live_run):
    model, tok = load_model(live_run["dir"] / "checkpoint_000024.pt")
    model.eval()
    prompt = tok.encode("Hyperkalaemia causes")
    assert list(stream_generate(model, prompt, 30)) == generate(model, [prompt], 30)[0]
    a = list(stream_generate(model, prompt, 30, temperature=1.0, top_k=50, seed=7))
    assert a == list(stream_generate(model, prompt, 30, temperature=1.0, top_k=50, seed=7))
    assert a == generate(model, [prompt], 30, temperature=1.0, top_k=50, seed=7)[0]
    long = tok.encode("word " * 400)                                       # longer than the model's context (64)
    assert len(list(stream_generate(model, long, 16))) == 16


def test_playground_loads_an_exported_folder(live_run, tmp_path):
    hf = tmp_path / "hf"
    r = run_cli("medllm-export", "--checkpoint", live_run["dir"] / "checkpoint_000024.pt", "--output", hf)
    assert r.returncode == 0, r.stderr[-2000:]
    a = GenerationPlayground(live_run["dir"] / "checkpoint_000024.pt")
    b = GenerationPlayground()
    b.path.value = str(hf)
    assert "tokenizer" in b.info.value and not b.button.disabled
    a.max_new_tokens.value = b.max_new_tokens.value = 12
    assert a.generate() == b.generate()                                    # the exported weights say the same


def test_playground_bad_path_is_shown_not_raised(tmp_path):
    pg = GenerationPlayground()
    pg.path.value = str(tmp_path / "nope.pt")
    assert pg.model is None and pg.button.disabled and "cannot load" in pg.info.value
    with pytest.raises(ValueError, match="no model loaded"): pg.generate()


# --- evaluation explorer -----------------------------------------------------------------------------------------

def test_eval_explorer_filters_and_shows_a_question(evaluated):
    preds = [json.loads(l) for l in (evaluated / "predictions.jsonl").read_text().splitlines()]
    ex = EvalExplorer(evaluated)
    assert len(ex.rows()) == len(preds) == 90
    ex.mode.value = "reasoning"
    ex.outcome.value = "incorrect"
    wrong = [p for p in preds if p["mode"] == "reasoning" and p["pred"] != p["gold"]]
    assert ex.rows() == wrong and f"<b>{len(wrong):,} records</b>" in ex.table.value
    ex.outcome.value = "correct"
    right = [p for p in preds if p["mode"] == "reasoning" and p["pred"] == p["gold"]]
    assert ex.rows() == right and len(right) + len(wrong) == 30
    ex.outcome.value = "all"
    ex.pick.value = 3                                                      # pick a question
    p = [q for q in preds if q["mode"] == "reasoning"][3]
    assert list(ex.fig.data[0].y) == p["scores"] and list(ex.fig.data[0].x) == ["A", "B", "C", "D"]
    colors = list(ex.fig.data[0].marker.color)
    assert colors[p["gold"]] == "#2a9d3f"                                  # gold marked green
    quiz = {r["id"]: r for r in demo_quiz()}
    assert html.escape(quiz[p["id"]]["question"]) in ex.detail.value     # the question, read back from the quiz
    assert html.escape(p["reasoning"]) in ex.detail.value                 # the generated reasoning
    ex.mode.value = "letter"
    assert "generated reasoning" not in ex.detail.value


def test_eval_explorer_benchmark_filter_and_empty_selection(evaluated):
    ex = EvalExplorer(evaluated)
    assert ex.benchmark.options == ("all", "demo") and ex.mode.options == ("all", "letter", "cloze", "reasoning")
    ex.benchmark.value = "demo"
    assert len(ex.rows()) == 90
    preds = [json.loads(l) for l in (evaluated / "predictions.jsonl").read_text().splitlines()]
    for mode in ("letter", "cloze", "reasoning"):
        ex.mode.value = mode
        for outcome in ("correct", "incorrect"):
            ex.outcome.value = outcome
            n = sum(q["mode"] == mode and (q["pred"] == q["gold"]) == (outcome == "correct") for q in preds)
            assert len(ex.rows()) == n
            if n == 0: assert "no record matches" in ex.detail.value and list(ex.fig.data[0].y) == []


def test_widgets_display_as_widgets(live_run, evaluated):
    for w in (TokenViewer("a"), TrainingDashboard(live_run["dir"]), GenerationPlayground(), EvalExplorer(evaluated)):
        assert "application/vnd.jupyter.widget-view+json" in w._repr_mimebundle_()
