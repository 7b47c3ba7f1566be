"""Summarise a py-spy raw profile (``run.py --profile DIR``): where the server's time goes.

    python benchmarks/profile_summary.py DIR/exec_async-uvicorn.txt [--under NAME] [--top 40]

Prints, per function (line numbers merged), the share of samples in which it was on the
stack (inclusive) and on top (self); ``--under`` keeps only stacks through that function.
"""

from __future__ import annotations

import argparse
import collections
import re


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--under", default="")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = kept = 0
    with open(args.path) as lines:
        for line in lines:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            count = int(count_text)
            total += count
            frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
            if args.under and not any(args.under in f for f in frames):
                continue
            kept += count
            for frame in set(frames):
                inclusive[frame] += count
            own[frames[-1]] += count
    print(f"{total} samples, {kept} kept")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"--- {title}")
        for frame, count in counter.most_common(args.top):
            print(f"{count / max(kept, 1):6.1%}  {frame[:150]}")


if __name__ == "__main__":
    main()
