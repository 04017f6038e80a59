"""`python -m node phantom OUTDIR [--size small|full] [--seed N] [variant ...]`."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from node.phantom.build import write_phantom
from node.phantom.layout import SIZES
from node.phantom.variants import VARIANTS, PhantomError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the phantom command's arguments to `parser`."""
    parser.add_argument("outdir", metavar="OUTDIR", type=Path, help="directory to write the phantom into")
    parser.add_argument("--size", choices=SIZES, default="small",
                        help="small: test-sized matrices (seconds); full: 512x512 CT, 128^3 SPECT")
    parser.add_argument("--seed", type=int, default=0, help="noise seed; the patient ID is PHANTOM<seed>")
    parser.add_argument("--ct-noise", type=float, default=None, metavar="HU",
                        help="one CT noise SD for every CT series (default: 10 HU at 0.78x0.78x2.5 mm, scaled by "
                             "sqrt(voxel volume))")
    # No argparse `choices` here: with nargs="*" it rejects the empty default; write_phantom validates.
    # Positional variants must directly follow OUTDIR (argparse does not resume a "*" positional after an
    # option); --variant may be given anywhere, repeatedly.
    parser.add_argument("variants", nargs="*", metavar="VARIANT",
                        help=f"encoding/acquisition variants right after OUTDIR, combinable: {', '.join(VARIANTS)}")
    parser.add_argument("--variant", dest="extra_variants", action="append", default=[], metavar="VARIANT",
                        help="a variant, anywhere on the command line (repeatable)")


def run(args: argparse.Namespace) -> int:
    """Write the phantom; print a one-line summary. Returns the process exit code."""
    started = time.perf_counter()
    variants = list(args.variants) + list(getattr(args, "extra_variants", []))
    try:
        outdir = write_phantom(args.outdir, size=args.size, seed=args.seed, variants=variants,
                               ct_noise_sd_hu=getattr(args, "ct_noise", None))
    except PhantomError as exc:
        print(f"phantom: {exc}")
        return 2
    truth = json.loads((outdir / "truth.json").read_text())
    n_files = sum(1 for _ in outdir.rglob("*.dcm"))
    print(f"phantom {truth['patient_id']} ({args.size}, variants: {', '.join(variants) or 'none'}): "
          f"{n_files} DICOM files in {outdir} ({time.perf_counter() - started:.1f} s); truth: {outdir / 'truth.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phantom", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
