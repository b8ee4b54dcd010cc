"""The service's CLIP tokenizer against open_clip's, in one process.

    python -m bench.tokenizer [--calls 200] [--model ViT-B-32]

Each call tokenizes new queries (`bench.common.queries`, numbered so that no
two calls repeat a text, as with the query cache off), with open_clip's own
tokenizer (ftfy cleaning, the BPE cache, a tensor row by row) and with the
service's (`models.tokenizer.fast_tokenizer`, same ids). Prints the median
milliseconds per call for 1, 8 and 64 queries and the speed-up. Plain ASCII
queries, so the second figure also shows what skipping ftfy is worth.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import open_clip
import torch

from bench.common import queries
from models.clip import register_bundled_configs
from models.tokenizer import fast_tokenizer


def median_ms(tokenize: Callable[[list[str]], torch.Tensor], batches: list[list[str]]) -> float:
    times = []
    for batch in batches:
        started = time.perf_counter()
        tokenize(batch)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="timed calls per batch size and tokenizer")
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model name (its tokenizer)")
    args = parser.parse_args()
    register_bundled_configs()
    reference = open_clip.get_tokenizer(args.model)
    fast = fast_tokenizer(open_clip.get_tokenizer(args.model))
    texts = queries(64, seed=2)
    print(f"{args.model} tokenizer, median ms per call over {args.calls} calls of new queries")
    print(f"  {'queries':>7} {'open_clip':>10} {'service':>10} {'speed-up':>8}")
    for size in (1, 8, 64):
        runs = {}
        for name, tokenize in (("open_clip", reference), ("service", fast)):
            # Every call its own texts: the number makes each a word neither cache has seen.
            batches = [[f"{text} {name}{call}" for text in texts[:size]] for call in range(args.calls + 3)]
            tokenize(batches[0])  # warm-up
            runs[name] = median_ms(tokenize, batches[3:])
        base, ours = runs["open_clip"], runs["service"]
        print(f"  {size:>7} {base:>10.4f} {ours:>10.4f} {base / ours:>7.1f}x")


if __name__ == "__main__":
    main()
