"""Batch-encoding throughput of medllm's tokenizer vs raw tiktoken, measured side by side in one run.

    python benchmarks/tokenizer_throughput.py [--tokenizer cl100k] [--mb 20] [--repeats 5] [--threads 8]

Prints MB/s for tiktoken's `Encoding.encode_ordinary_batch` and for `Tokenizer.encode_batch` (with and without
the appended <|endoftext|>, as the data pipeline calls it) on the same texts, alternating the order each repeat,
and the ratio medllm / raw of the medians (target >= 0.9). Texts: the course's PubMed abstracts when
../shared/data is there, else the embedded demo corpus repeated.
"""
import argparse
import statistics
import time

from medllm.core import shared_data_dir
from medllm.tokenizer import get_tokenizer, parse_datasets


def load_texts(mb: float) -> tuple[str, list[str]]:
    data = shared_data_dir()
    if data is not None:
        name = "PubMed abstracts (shared/data)"
        texts = parse_datasets(f"{data}/pubmed_abstracts/sumpubmed_abstracts.jsonl.gz,{data}/pubmed_abstracts/pubtator_abstracts.jsonl")
        texts = [t for ts in texts.values() for t in ts]
    else:
        name, texts = "demo corpus (repeated)", parse_datasets("sample")["sample"]
    out, size = [], 0
    while size < mb * 1e6:
        for t in texts:
            out.append(t); size += len(t.encode("utf-8"))
            if size >= mb * 1e6: break
    return name, out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", default="cl100k")
    p.add_argument("--mb", type=float, default=20.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=8)
    a = p.parse_args()
    tok = get_tokenizer(a.tokenizer)
    name, texts = load_texts(a.mb)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    fns = {"tiktoken encode_ordinary_batch": lambda: tok.enc.encode_ordinary_batch(texts, num_threads=a.threads),
           "medllm encode_batch": lambda: tok.encode_batch(texts, num_threads=a.threads),
           "medllm encode_batch(+eot)": lambda: tok.encode_batch(texts, append_eot=True, num_threads=a.threads)}
    for f in fns.values(): f()  # warm-up
    times = {k: [] for k in fns}
    for r in range(a.repeats):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))
        for k in order:
            t0 = time.perf_counter(); fns[k](); times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    raw = med["tiktoken encode_ordinary_batch"]
    print(f"tokenizer {tok.name}, {len(texts):,} texts, {nbytes / 1e6:.1f} MB of {name}, {a.threads} threads, "
          f"median of {a.repeats} alternating repeats")
    print("| encoder | MB/s | ratio to raw |\n|---|---:|---:|")
    for k, t in med.items():
        print(f"| {k} | {nbytes / 1e6 / t:.2f} | {raw / t:.3f} |")


if __name__ == "__main__":
    main()
