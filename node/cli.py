"""Command line: `python -m node {serve,status,phantom,demo,resend,reprocess} ...` (also `liver-node ...`)."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from node import __version__
from node.config import Config, ConfigError, load_config
from node.logsetup import configure

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = "config.toml"


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def cmd_serve(args: argparse.Namespace) -> int:
    from node.service import serve

    config = _config(args)
    configure(config.node.log_level)
    logger.info("liver-node %s starting with %s (data in %s)", __version__, args.config, config.node.data_dir)
    return serve(config)


def _open_index(config: Config):
    from node.index import Index, index_path

    return Index(index_path(config.node.data_dir))


def cmd_status(args: argparse.Namespace) -> int:
    from node.status import render_status

    config = _config(args)
    index = _open_index(config)
    try:
        outbox_rows = None
        try:
            from node.outbox import Outbox

            outbox_rows = Outbox(config).summary()
        except ImportError:
            outbox_rows = None
        sys.stdout.write(render_status(config, index, outbox_rows))
    finally:
        index.close()
    return 0


def cmd_reprocess(args: argparse.Namespace) -> int:
    config = _config(args)
    index = _open_index(config)
    try:
        if index.get_case(args.case) is None:
            print(f"no case {args.case!r}; `status` lists the cases", file=sys.stderr)
            return 1
        if not index.force_queue(args.case):
            print(f"case {args.case!r} is being analysed right now; try again when it finishes", file=sys.stderr)
            return 1
    finally:
        index.close()
    print(f"case {args.case} queued for re-analysis (a running node picks it up within seconds)")
    return 0


def cmd_resend(args: argparse.Namespace) -> int:
    from node.outbox import Outbox

    config = _config(args)
    if not args.case and not args.failed:
        print("give a CASE or --failed", file=sys.stderr)
        return 2
    n = Outbox(config).resend(case_id=args.case, failed_only=args.failed)
    print(f"{n} item(s) queued for sending again")
    return 0


def cmd_phantom(args: argparse.Namespace) -> int:
    from node.phantom.cli import run

    configure("INFO")
    return run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from node.demo import run_demo

    config = _config(args)
    configure("INFO")
    return run_demo(config, args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="liver-node", description="Unattended DICOM node for liver-directed therapy.")
    p.add_argument("--version", action="version", version=f"liver-node {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
        return sp

    with_config(sub.add_parser("serve", help="run the DICOM node in the foreground")).set_defaults(fn=cmd_serve)
    with_config(sub.add_parser("status", help="show cases, series, states and the outbox")).set_defaults(
        fn=cmd_status)
    sp = with_config(sub.add_parser("reprocess", help="analyse a case again"))
    sp.add_argument("case")
    sp.set_defaults(fn=cmd_reprocess)
    sp = with_config(sub.add_parser("resend", help="send a case's results (or all failed items) again"))
    sp.add_argument("case", nargs="?")
    sp.add_argument("--failed", action="store_true", help="re-queue every failed outbox item")
    sp.set_defaults(fn=cmd_resend)
    sp = sub.add_parser("phantom", help="write a digital liver phantom patient (DICOM + truth)")
    try:
        from node.phantom.cli import add_arguments

        add_arguments(sp)
    except ImportError:
        pass
    sp.set_defaults(fn=cmd_phantom)
    sp = with_config(sub.add_parser("demo", help="send a phantom patient to a running node and compare results"))
    sp.add_argument("--host", default=None, help="node address (default: from config, 127.0.0.1 for 0.0.0.0)")
    sp.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for results")
    sp.add_argument("--workdir", type=Path, default=None, help="where to write the phantom (default: temp dir)")
    sp.set_defaults(fn=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except ConfigError as exc:
        print(f"liver-node: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
