"""Command line: mine review flags from embeddings (and a run's statistics).

    python -m ml.mining --embeddings E.npy --labels L.npy [--stats RUN/stats.npz] [--norms N.npy]
        [--active A.npy] --out flags.jsonl [--kinds noisy,hard,...] [--open-set-angle 75] ...

E.npy: N x D embeddings (ml.embed's float16, read memory-mapped); L.npy: N class ids (-1 =
excluded); A.npy: N booleans (false = not active). --stats takes stats.npz or its run folder.
Writes one FlagCandidate per line and prints a JSON summary on stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Sequence

import numpy as np

from ml.mining.candidate import KINDS
from ml.mining.config import MiningConfig
from ml.mining.flags import mine, write_flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml.mining", description="Mine review flags from embeddings.")
    parser.add_argument("--embeddings", required=True, help="N x D .npy (ml.embed's embeddings.npy)")
    parser.add_argument("--labels", required=True, help="N class ids .npy, -1 = excluded")
    parser.add_argument("--stats", help="a run's stats.npz or its run folder (without it: embedding-only mode)")
    parser.add_argument("--norms", help="N feature norms .npy (ml.embed's norms.npy)")
    parser.add_argument("--active", help="N booleans .npy; false = not active, never flagged")
    parser.add_argument("--out", required=True, help="flags.jsonl to write")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--open-set-angle", type=float, help="degrees (default: calibrated)")
    parser.add_argument("--low-norm", type=float, help="norm threshold (default: calibrated)")
    parser.add_argument("--duplicate-score", type=float,
                        help="identity-pair cross margin, a cosine difference <= 0 (default: calibrated)")
    parser.add_argument("--margin", type=float, help="hard band margin m in radians (default: 0)")
    parser.add_argument("--m1", type=float, help="noisy band |m1| in radians (default: calibrated)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = MiningConfig(
        kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()),
        open_set_angle=args.open_set_angle, low_norm_threshold=args.low_norm,
        duplicate_score=args.duplicate_score,
        margin=args.margin, margin_m1=args.m1, seed=args.seed,
    )
    stats = None
    if args.stats:
        from ml.train.stats import load_stats
        stats = load_stats(args.stats)
    started = time.perf_counter()
    flags = mine(
        embeddings=np.load(args.embeddings, mmap_mode="r"),
        labels=np.load(args.labels),
        stats=stats,
        norms=np.load(args.norms) if args.norms else None,
        active=np.load(args.active).astype(bool) if args.active else None,
        config=config,
    )
    written = write_flags(flags, args.out)
    summary = {"out": args.out, "flags": written, "by_kind": dict(Counter(f.kind for f in flags)),
               "mode": "stats" if stats is not None else "embedding-only",
               "seconds": round(time.perf_counter() - started, 2)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
