"""Data pipeline throughput from local JSONL: render + mix + tokenize + pack, beside raw tiktoken on the same text.

    python benchmarks/data_throughput.py [--tokens 4000000] [--seq_len 1024] [--tokenizer cl100k]

Measured in one run on the course's PubMed abstracts, guidelines and textbooks (../shared/data; the embedded demo
corpus when absent):
  1. raw tiktoken: `Encoding.encode_ordinary_batch` on the rendered texts, one thread (what one process does);
  2. medllm's pipeline in one process (DataConfig num_threads=1): rows/s x row length;
  3. the same through a DataLoader with 2 workers (the training setup), tokens/s delivered to the training process.
Targets: (3) >= 1M tokens/s and (2)/(1) >= 0.6.
"""
import argparse
import itertools
import time

from medllm.core import shared_data_dir
from medllm.packing import DataConfig, Pipeline, TokenRows, make_loader
from medllm.reasoning import Special
from medllm.sources import iter_documents, parse_datasets
from medllm.tokenizer import get_tokenizer


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=4_000_000)
    p.add_argument("--seq_len", type=int, default=1024)
    p.add_argument("--tokenizer", default="cl100k")
    a = p.parse_args()
    data = shared_data_dir()
    spec = (f"pubmed={data}/pubmed_abstracts,guidelines={data}/guidelines,textbooks={data}/textbooks" if data else "sample")
    tok = get_tokenizer(a.tokenizer)
    cfg = DataConfig(datasets=spec, tokenizer=a.tokenizer, seq_len=a.seq_len, num_threads=1, val_fraction=0.0)
    n_rows = a.tokens // cfg.row_len

    # 1. raw tiktoken on the rendered text of the same documents (rendering not timed)
    texts = []
    for e in parse_datasets(spec):
        for d in iter_documents(e):
            texts.append("".join(x for x in d.parts if not isinstance(x, Special)))
    t0 = time.perf_counter(); raw_tokens = sum(map(len, tok.enc.encode_ordinary_batch(texts, num_threads=1))); t_raw = time.perf_counter() - t0
    raw = raw_tokens / t_raw

    # 2. the whole pipeline in this process
    t0 = time.perf_counter()
    rows = sum(1 for _ in itertools.islice(Pipeline(cfg, tok).rows(), n_rows))
    t_pipe = time.perf_counter() - t0
    pipe = rows * cfg.row_len / t_pipe

    # 3. through a DataLoader with 2 workers (start-up included)
    bs = 8
    t0 = time.perf_counter()
    got = sum(b.numel() for b in itertools.islice(make_loader(TokenRows(cfg, batch_size=bs), bs, num_workers=2), n_rows // bs))
    t_dl = time.perf_counter() - t0
    dl = got / t_dl
    print(f"sources: {spec}\ntokenizer {tok.name}, rows of {cfg.row_len} tokens")
    print("| path | tokens | seconds | tokens/s | ratio to raw |\n|---|---:|---:|---:|---:|")
    print(f"| raw tiktoken encode_ordinary_batch (1 thread) | {raw_tokens:,} | {t_raw:.2f} | {raw:,.0f} | 1.00 |")
    print(f"| medllm pipeline, 1 process | {rows * cfg.row_len:,} | {t_pipe:.2f} | {pipe:,.0f} | {pipe / raw:.2f} |")
    print(f"| medllm pipeline, DataLoader 2 workers | {got:,} | {t_dl:.2f} | {dl:,.0f} | {dl / raw:.2f} |")


if __name__ == "__main__":
    main()
