"""Does the question help? The demo quiz in cloze form, scored under four contexts, for one checkpoint.

    python benchmarks/demo_quiz_contexts.py --checkpoint runs/demo

Each quiz question names the corpus row it was written from (`source_synth_id`). A model that answers from what it
learned should pick the gold option more often with the question than without it, and more often still when the
context is the very training text. This prints cloze accuracy (raw and length-normalised, as `medllm-evaluate` scores
it) with these contexts:

- the quiz question (what `medllm-evaluate --mode cloze` does);
- no question at all (what the options' own likelihood gives: the corpus's wording is familiar);
- the training row's own query, verbatim;
- the training row's query and reasoning, rendered in the reasoning format up to `<|answer|>` (teacher forcing).

Plus "mutual information": the quiz-question score minus the no-question score, which measures how much the
question itself moves each option (Holtzman et al., 2021, "Surface form competition").
"""
import torch

from medllm.core import ArgParser, cli, demo_corpus, demo_quiz
from medllm.evaluate import bootstrap_ci, load_evaluated, loglikelihoods
from medllm.reasoning import ANSWER, QUESTION, THINKING


@cli
def main(argv=None):
    p = ArgParser(prog="demo_quiz_contexts", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="any form medllm-evaluate takes: a run folder, a checkpoint, an export")
    a = p.parse_args(argv)
    model, tok, meta = load_evaluated(a.checkpoint)
    model.eval()
    quiz = demo_quiz()
    corpus = {r["synth_id"]: r for r in demo_corpus()}
    rows = [corpus[q["source_synth_id"]] for q in quiz]

    def scores(contexts) -> list[list[float]]:
        "Sum of log-probabilities of each ' option' after each question's context."
        reqs = [(ctx, " " + o) for ctx, q in zip(contexts, quiz) for o in q["options"].values()]
        with torch.no_grad(): ll = loglikelihoods(model, tok, reqs)
        out, k = [], 0
        for q in quiz:
            out.append(ll[k:k + len(q["options"])]); k += len(q["options"])
        return out

    def correct(per_q, norm: bool) -> list[bool]:
        res = []
        for s, q in zip(per_q, quiz):
            opts = list(q["options"].values())
            if norm: s = [x / max(len(o.strip()), 1) for x, o in zip(s, opts)]   # as medllm-evaluate: characters, no space
            res.append("ABCD"[max(range(len(s)), key=s.__getitem__)] == q["answer_idx"])
        return res

    contexts = {
        "the quiz question": [f"Question: {q['question']}\nAnswer:" for q in quiz],
        "no question": ["Question: \nAnswer:" for _ in quiz],
        "the training query, verbatim": [f"Question: {r['query']}\nAnswer:" for r in rows],
        "training query + reasoning, reasoning format": [[QUESTION, r["query"], THINKING, r["synthetic_reasoning"], ANSWER] for r in rows],
    }
    got = {name: scores(c) for name, c in contexts.items()}
    seen = f"{meta['tokens_seen']:,} tokens" if isinstance(meta.get("tokens_seen"), int) else "tokens not recorded"
    print(f"{meta['path']} (step {meta.get('step')}, {seen}): {len(quiz)} questions, chance 0.25")
    print("| context | accuracy | 95% interval | acc_norm | 95% interval |\n|---|---:|---|---:|---|")
    for name, s in got.items():
        raw, norm = correct(s, False), correct(s, True)
        (lo, hi), (nlo, nhi) = bootstrap_ci(raw), bootstrap_ci(norm)
        print(f"| {name} | {sum(raw) / len(raw):.3f} | {lo:.2f}–{hi:.2f} | {sum(norm) / len(norm):.3f} | {nlo:.2f}–{nhi:.2f} |")
    mi = [[c - u for c, u in zip(cq, uq)] for cq, uq in zip(got["the quiz question"], got["no question"])]
    raw = correct(mi, False)
    lo, hi = bootstrap_ci(raw)
    print(f"| mutual information (quiz question − no question) | {sum(raw) / len(raw):.3f} | {lo:.2f}–{hi:.2f} | | |")


if __name__ == "__main__": main()
