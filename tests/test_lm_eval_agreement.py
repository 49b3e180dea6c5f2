"""Agreement with lm-evaluation-harness, offline: an exported tiny model (a few training steps), local task definitions over
the benchmark sample files; medllm's `letter` mode must pick the same answer on every question, log-likelihoods within 1e-3."""
import json
import os

import pytest
import torch

from medllm.evaluate import load_benchmark, score_items
from medllm.export import export_hf
from medllm.model import GPT, get_config, pad_vocab

TASKS = {
    "medqa": ("medqa_usmle_4opt_sample.jsonl",
              "Question: {{question}}\nA. {{options.A}}\nB. {{options.B}}\nC. {{options.C}}\nD. {{options.D}}\nAnswer:",
              '["A", "B", "C", "D"]', "{{ ['A', 'B', 'C', 'D'].index(answer_idx) }}"),
    "medmcqa": ("medmcqa_validation_sample.jsonl",
                "Question: {{question}}\nChoices:\nA. {{opa}}\nB. {{opb}}\nC. {{opc}}\nD. {{opd}}\nAnswer:",
                '["A", "B", "C", "D"]', "{{cop}}"),
    "pubmedqa": ("pubmedqa_pqa_labeled_sample.jsonl",
                 "Abstract: {{context.contexts | join('\\n')}}\nQuestion: {{question}}\nAnswer:",
                 '["yes", "no", "maybe"]', "{{ ['yes', 'no', 'maybe'].index(final_decision) }}"),
}


def test_letter_mode_agrees_with_lm_evaluation_harness(trained_nano, shared_data, tmp_path):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager
    _, tok = trained_nano  # the 1k rustbpe tokenizer trained on the demo corpus
    torch.manual_seed(0)
    m = GPT(get_config("tiny", vocab_size=pad_vocab(tok.n_vocab), seq_len=1024))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    x = torch.randint(0, tok.n_vocab, (2, 65))
    for _ in range(3):
        loss = m(x[:, :-1], x[:, 1:]); opt.zero_grad(); loss.backward(); opt.step()
    m.eval()
    export_hf(m, tok, tmp_path / "hf")
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    for name, (fname, text, choices, target) in TASKS.items():
        (tasks_dir / f"medllm_{name}.yaml").write_text(
            f"task: medllm_{name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {shared_data / 'bench_samples' / fname}\n"
            f"test_split: test\noutput_type: multiple_choice\ndoc_to_text: {json.dumps(text)}\ndoc_to_choice: {json.dumps(choices)}\n"
            f"doc_to_target: {json.dumps(target)}\ntarget_delimiter: \" \"\nmetric_list:\n  - metric: acc\n")
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={tmp_path / 'hf'},dtype=float32", tasks=[f"medllm_{n}" for n in TASKS],
                                  task_manager=TaskManager(include_path=str(tasks_dir)), log_samples=True, device="cpu", batch_size=1)
    n_checked = 0
    for name, (fname, *_rest) in TASKS.items():
        ours = score_items(m, tok, name, load_benchmark(name, shared_data / "bench_samples" / fname), "letter")
        theirs = sorted(res["samples"][f"medllm_{name}"], key=lambda s: s["doc_id"])
        assert len(ours) == len(theirs) == 30
        for o, t in zip(ours, theirs):
            ll = [float(r[0]) for r in t["filtered_resps"]]
            assert max(range(len(ll)), key=ll.__getitem__) == o["pred"], (name, o["id"])
            assert max(abs(a - b) for a, b in zip(ll, o["scores"])) < 1e-3, (name, o["id"], ll, o["scores"])
            n_checked += 1
    assert n_checked == 90
