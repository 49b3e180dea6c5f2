"""Evaluation scoring speed: batched log-likelihood vs one forward per choice, same questions, one run.

    python benchmarks/eval_scoring.py [--model tiny] [--mode letter] [--questions 30]

Uses a freshly initialised model (speed does not depend on the weights) with the cl100k tokenizer, on the demo quiz plus
the benchmark samples in ../shared/data when present. Prints questions/s for both and the ratio (target >= 3x).
"""
import argparse
import time

import torch

from medllm.core import shared_data_dir
from medllm.evaluate import cloze_request, letter_request, load_benchmark, loglikelihoods, loglikelihoods_naive
from medllm.model import GPT, get_config, pad_vocab
from medllm.tokenizer import get_tokenizer


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--mode", default="letter", choices=["letter", "cloze"])
    p.add_argument("--questions", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    tok = get_tokenizer("cl100k")
    m = GPT(get_config(a.model, vocab_size=pad_vocab(tok.n_vocab))).eval()
    data = shared_data_dir()
    sets = [("demo", load_benchmark("demo"))]
    if data:
        b = data / "bench_samples"
        sets += [("medqa", load_benchmark("medqa", b / "medqa_usmle_4opt_sample.jsonl")),
                 ("medmcqa", load_benchmark("medmcqa", b / "medmcqa_validation_sample.jsonl"))]
    build = letter_request if a.mode == "letter" else cloze_request
    reqs, n_q = [], 0
    for name, items in sets:
        for it in items[: a.questions]:
            c, xs = build(name, it)
            reqs += [(c, x) for x in xs]
            n_q += 1
    t0 = time.perf_counter(); batched = loglikelihoods(m, tok, reqs, batch_size=16); t_b = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad(): naive = loglikelihoods_naive(m, tok, reqs)
    t_n = time.perf_counter() - t0
    diff = max(abs(x - y) for x, y in zip(batched, naive))
    print(f"{a.model} ({m.num_params() / 1e6:.1f}M), {a.mode} mode, {n_q} questions, {len(reqs)} choices, max |ll diff| {diff:.1e}")
    print(f"| scorer | seconds | questions/s |\n|---|---:|---:|\n| one forward per choice | {t_n:.2f} | {n_q / t_n:.1f} |\n"
          f"| batched | {t_b:.2f} | {n_q / t_b:.1f} |\nratio: {t_n / t_b:.2f}x")


if __name__ == "__main__":
    main()
