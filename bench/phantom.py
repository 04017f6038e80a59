"""Time the full-size phantom and report its file sizes.

    .venv/bin/python bench/phantom.py [--size full|small] [--keep DIR] [variant ...]

Writes into a temporary directory (removed afterwards unless --keep names a directory to use).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from node.phantom import write_phantom  # noqa: E402


def _size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="full", choices=("small", "full"))
    parser.add_argument("--keep", type=Path, help="write here and keep the result")
    parser.add_argument("variants", nargs="*")
    args = parser.parse_args()
    outdir = args.keep or Path(tempfile.mkdtemp(prefix="phantom-bench-"))
    try:
        started = time.perf_counter()
        write_phantom(outdir, size=args.size, variants=args.variants)
        elapsed = time.perf_counter() - started
        print(f"phantom size={args.size} variants={args.variants or 'none'}: generated in {elapsed:.1f} s")
        total_files, total_bytes = 0, 0
        for sub in sorted(p for p in outdir.iterdir() if p.is_dir()):
            n, b = _size(sub)
            total_files += n
            total_bytes += b
            print(f"  {sub.name:20s} {n:5d} files {b / 1e6:9.1f} MB")
        truth = outdir / "truth.json"
        print(f"  {'truth.json':20s} {1:5d} file  {truth.stat().st_size / 1e6:9.1f} MB")
        print(f"  {'total':20s} {total_files + 1:5d} files {(total_bytes + truth.stat().st_size) / 1e6:9.1f} MB")
    finally:
        if args.keep is None:
            shutil.rmtree(outdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
