#!/usr/bin/env python3
"""Writes PG-19 books as plain text files for kvc's long-text evaluations.

    python tools/prepare_pg19.py                                 # 100 test books
    python tools/prepare_pg19.py --split validation --num_books 20 --output_dir dataset/pg19-val

Output: <output_dir>/book_NNN.txt (NNN = 000, 001, ... in the dataset's order), each the
book's `text` field written unchanged as UTF-8; the same layout as the seed project's
dataset/pg19. The split is streamed, so only the requested books are fetched (the train split
is about 11 GB). Needs the `datasets` package and access to the Hugging Face Hub.

If your `datasets` version refuses the dataset's loading script, point --revision at the
Hub's Parquet conversion: --revision refs/convert/parquet.
"""

import argparse
import sys
from pathlib import Path


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_books", type=int, default=100,
                   help="number of books to write (default: 100)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"],
                   help="dataset split (default: test)")
    p.add_argument("--output_dir", type=Path, default=Path("dataset/pg19"),
                   help="folder to write (default: dataset/pg19)")
    p.add_argument("--dataset", default="deepmind/pg19",
                   help="Hub dataset id (default: deepmind/pg19)")
    p.add_argument("--revision", default=None, help="dataset revision (default: the latest)")
    args = p.parse_args()
    if args.num_books < 1:
        p.error(f"--num_books must be at least 1, got {args.num_books}")
    return args


def main():
    args = parse_args()
    try:
        from datasets import load_dataset
    except ImportError:
        sys.exit("error: the datasets package is not installed "
                 "(pip install -r tools/requirements-dev.txt)")

    ds = load_dataset(args.dataset, split=args.split, revision=args.revision, streaming=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for i, sample in enumerate(ds):
        if i >= args.num_books:
            break
        path = args.output_dir / f"book_{i:03d}.txt"
        # newline="" keeps the text's own line endings byte for byte.
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(sample["text"])
        written += 1
        print(f"{path} ({len(sample['text'])} characters)", flush=True)
    if written < args.num_books:
        print(f"note: the {args.split} split has only {written} books", file=sys.stderr)
    print(f"wrote {written} books to {args.output_dir}")


if __name__ == "__main__":
    main()
