"""Command line: `python -m node COMMAND ...` (also `liver-node COMMAND ...`).

Exit statuses, the same for every command:

    0  done
    1  failed or refused (check-config found a problem, no destinations included; an action cannot be done now;
       the demo failed)
    2  invalid configuration or usage (the message names the key; a data_dir that is a file or not writable)
    3  cannot start here: the port is taken or the data dir is in use by another node
    4  not found: unknown case, series or study, or the data dir does not exist
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node import __version__
from node.config import Config, ConfigError, load_config
from node.logsetup import configure

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = "config.toml"
EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_IN_USE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4


class NotFound(LookupError):
    """Exit status 4 with this message."""


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _operator() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment
        return "cli"


def cmd_serve(args: argparse.Namespace) -> int:
    from node.service import serve

    config = _config(args)
    configure(config.node.log_level)
    logger.info("liver-node %s starting with %s (data in %s)", __version__, args.config, config.node.data_dir)
    return serve(config)


def _existing_data_dir(config: Config) -> Path:
    """The data dir, which must exist: reading commands never create it (a mistyped path would look empty)."""
    d = Path(config.node.data_dir)
    if d.exists() and not d.is_dir():
        raise ConfigError("node.data_dir", f"{d} is a file, not a directory")
    if not d.is_dir():
        raise NotFound(f"data dir {d} does not exist: nothing was ever received there, or data_dir in "
                       f"{config.source or 'the config'} is wrong")
    return d


def _open(config: Config) -> tuple[Any, Any]:
    """The index and outbox of an existing data dir; operator actions done (or refused) from here are audited to
    stderr and data_dir/audit.log like the node's own."""
    from node.audit import open_file
    from node.index import Index, index_path
    from node.manifest import write_manifests
    from node.outbox import Outbox

    _existing_data_dir(config)
    if not logging.getLogger().handlers:
        configure("WARNING")  # this command's warnings and its audit lines (node.audit logs at INFO regardless)
    open_file(config.node.data_dir)
    index, outbox = Index(index_path(config.node.data_dir)), Outbox(config)
    outbox.on_change = lambda cases: write_manifests(config, index, outbox, cases)  # manifests follow changes
    return index, outbox


def cmd_status(args: argparse.Namespace) -> int:
    from node.casestatus import collect
    from node.index import index_path
    from node.status import render_json, render_status

    config = _config(args)
    _existing_data_dir(config)
    if not index_path(config.node.data_dir).exists():
        sys.stdout.write('{"cases": [], "conflicts": [], "outbox": []}\n' if args.json else
                         f"No cases yet: the data dir {config.node.data_dir} has no index (nothing received).\n")
        return EXIT_OK
    index, outbox = _open(config)
    try:
        status = collect(config, index, outbox)
        sys.stdout.write(render_json(status) if args.json else render_status(status))
    finally:
        index.close()
        outbox.close()
    return EXIT_OK


def cmd_reprocess(args: argparse.Namespace) -> int:
    from node.operations import reprocess

    config = _config(args)
    index, outbox = _open(config)
    try:
        print(reprocess(index, args.case, _operator()))
    finally:
        index.close()
        outbox.close()
    return EXIT_OK


def cmd_resend(args: argparse.Namespace) -> int:
    from node.operations import resend

    config = _config(args)
    if not args.case and not args.failed:
        print("liver-node resend: give a CASE or --failed", file=sys.stderr)
        return EXIT_CONFIG
    index, outbox = _open(config)
    try:
        print(resend(index, outbox, args.case, _operator(), failed_only=args.failed))
    finally:
        index.close()
        outbox.close()
    return EXIT_OK


def cmd_release(args: argparse.Namespace) -> int:
    from node.operations import release

    config = _config(args)
    index, outbox = _open(config)
    try:
        from node.completion import Completion

        # Completion's own rule decides whether the released case can run; a queued case is picked up by the
        # running node's analysis worker from the index within seconds (no scheduler needed here).
        evaluate = Completion(index, config, on_ready=lambda _case: None).evaluate_case
        print(release(index, args.case, _operator(), evaluate))
    finally:
        index.close()
        outbox.close()
    return EXIT_OK


def cmd_reassign(args: argparse.Namespace) -> int:
    from node.operations import reassign

    config = _config(args)
    index, outbox = _open(config)
    try:
        from node.completion import Completion

        evaluate = Completion(index, config, on_ready=lambda _case: None).evaluate_case
        print(reassign(index, args.uid, args.to, _operator(), from_case=args.from_case, evaluate=evaluate))
    finally:
        index.close()
        outbox.close()
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    from node.retention import apply, plan
    from node.status import table

    config = _config(args)
    configure("INFO")
    if not config.retention.enabled:
        print("retention is off: every [retention] *_days is 0 (keep forever); nothing to prune")
        return EXIT_OK
    index, outbox = _open(config)
    try:
        deletions = plan(config, index, outbox)
        rows = [(d.kind, d.case_id or "-", d.what[:48], len(d.paths), f"{d.bytes / 1e6:.1f}", d.why)
                for d in deletions]
        print("\n".join(table(("KIND", "CASE", "WHAT", "FILES", "MB", "WHY"), rows)) if rows else "nothing to prune")
        total = sum(d.bytes for d in deletions) / 1e6
        if args.dry_run:
            print(f"dry run: {len(deletions)} deletion(s), {total:.1f} MB would be freed; nothing was deleted")
        else:
            n = apply(config, index, outbox, deletions)
            print(f"{n} deletion(s), {total:.1f} MB freed (audited)")
    finally:
        index.close()
        outbox.close()
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the configuration, then check what it points at: data dir, ports, every destination. Exit 1 on
    any problem, "no destinations at all" included (results would reach nobody); outputs that only some
    destination lacks are a WARNING row with exit 0."""
    from node.casestatus import disk_status
    from node.status import table

    config = _config(args)  # ConfigError -> exit 2 with the key named
    print(f"configuration {args.config}: valid")
    problems, rows = 0, []
    d = Path(config.node.data_dir)
    existing = next((p for p in (d, *d.parents) if p.exists()), Path("/"))
    import os

    if not existing.is_dir():
        writable, detail = False, f"{existing} is a file, not a directory"
    else:
        writable = os.access(existing, os.W_OK | os.X_OK)
        detail = (("exists" if d.is_dir() else f"will be created under {existing}")
                  + ("" if writable else " - NOT WRITABLE by this user"))
    rows.append(("data_dir", str(d), detail, "ok" if writable else "FAILED"))
    problems += 0 if writable else 1
    disk = disk_status(config.with_overrides(node=_replace_data_dir(config, existing)))
    if disk is not None:
        rows.append(("disk", str(existing), f"{disk.free_bytes >> 20} MB free, watermark "
                     f"{disk.min_free_bytes >> 20} MB", "LOW" if disk.low else "ok"))
        problems += 1 if disk.low else 0
    ports = [("dicom port", config.node.host, config.node.port)]
    if config.http_enabled:
        ports.append(("http port", config.health.host, config.health.port))
    for what, host, port in ports:
        rows.append((what, f"{host}:{port}", *_port_free(host, port)))
    for dest in config.destinations:
        detail, ok = _check_destination(config, dest)
        problems += 0 if ok else 1
        rows.append((f"destination {dest.name}", ", ".join(dest.outputs), detail, "ok" if ok else "FAILED"))
    if not config.destinations:  # the node starts (and warns), but nothing it makes reaches anyone
        rows.append(("destinations", "(none)", "no destinations configured: results stay in data_dir/outbox and "
                     "reach nobody", "WARNING"))
        problems += 1
    for kind in config.unrouted_outputs() if config.destinations else ():
        rows.append(("routing", kind, "no destination takes it: stays in data_dir/outbox", "WARNING"))
    for hook in config.notifications.webhooks:
        rows.append((f"webhook {hook.name}", hook.url.split("?")[0], ", ".join(hook.events)
                     + (" (with patient data)" if hook.include_phi else " (no patient data)"), "configured"))
    print("\n".join(table(("CHECK", "WHAT", "DETAIL", "RESULT"), rows)))
    if not config.destinations:
        print("WARNING: no destinations configured: results will go nowhere (add [destinations.NAME])")
    print(f"{problems} problem(s)" if problems else "all checks passed")
    return EXIT_FAILURE if problems else EXIT_OK


def _replace_data_dir(config: Config, path: Path) -> Any:
    import dataclasses

    return dataclasses.replace(config.node, data_dir=path)


def _port_free(host: str, port: int) -> tuple[str, str]:
    if port == 0:
        return "ephemeral port chosen at start", "ok"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return f"cannot listen: {exc.strerror or exc} (a running node holds it?)", "IN USE"
    return "free", "ok"


def _check_destination(config: Config, dest: Any) -> tuple[str, bool]:
    """A folder must be writable (or creatable); a DICOM peer must answer C-ECHO."""
    import os

    if dest.folder is not None:
        p = Path(dest.folder)
        existing = p if p.is_dir() else next((q for q in p.parents if q.is_dir()), Path("/"))
        ok = os.access(existing, os.W_OK | os.X_OK)
        return f"folder {p} ({'exists' if p.is_dir() else 'will be created'}{'' if ok else ', NOT WRITABLE'})", ok
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    tls = None
    if dest.tls is not None:
        from node.tls import client_context

        tls = (client_context(dest.tls), dest.host)
    ae = AE(ae_title=config.node.ae_title)
    ae.add_requested_context(Verification)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = 10
    where = f"{dest.ae_title}@{dest.host}:{dest.port}{' (TLS)' if tls else ''}"
    t0 = time.perf_counter()
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls)
    if not assoc.is_established:
        if assoc.is_rejected:
            prim = assoc.acceptor.primitive
            detail = f"{prim.result_str}, {prim.reason_str}" if prim is not None else "no detail"
            return f"{where}: association rejected ({detail})", False
        return f"{where}: no association (unreachable, or refused our AE title {config.node.ae_title})", False
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    ms = (time.perf_counter() - t0) * 1000
    if getattr(status, "Status", None) == 0:
        return f"{where}: C-ECHO success in {ms:.0f} ms", True
    return f"{where}: C-ECHO answered {status}", False


def cmd_conformance(args: argparse.Namespace) -> int:
    from node.conformance import statement

    text = statement()
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            print(f"liver-node: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


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
    p = argparse.ArgumentParser(prog="liver-node", description="Unattended DICOM node for liver-directed therapy.",
                                epilog="exit status: 0 done, 1 failed/refused, 2 invalid configuration or usage, "
                                       "3 port or data dir in use, 4 case, series or data dir not found")
    p.add_argument("--version", action="version", version=f"liver-node {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", default=DEFAULT_CONFIG, help="config file (default: %(default)s)")
        return sp

    with_config(sub.add_parser("serve", help="run the DICOM node in the foreground")).set_defaults(fn=cmd_serve)
    sp = with_config(sub.add_parser("status", help="show cases, series, workflows, conflicts and the outbox"))
    sp.add_argument("--json", action="store_true", help="one JSON object (schema: node/casestatus.py)")
    sp.set_defaults(fn=cmd_status)
    sp = with_config(sub.add_parser("reprocess", help="analyse a case again"))
    sp.add_argument("case")
    sp.set_defaults(fn=cmd_reprocess)
    sp = with_config(sub.add_parser("resend", help="send a case's results (or all failed items) again"))
    sp.add_argument("case", nargs="?")
    sp.add_argument("--failed", action="store_true", help="re-queue every failed outbox item")
    sp.set_defaults(fn=cmd_resend)
    sp = with_config(sub.add_parser("release", help="release a case held after a patient-identity conflict"))
    sp.add_argument("case")
    sp.set_defaults(fn=cmd_release)
    sp = with_config(sub.add_parser("reassign", help="move a series (or a study's series) to another case: the "
                                                     "operator's answer to an identity conflict"))
    sp.add_argument("uid", help="SeriesInstanceUID, or StudyInstanceUID for all series of a study")
    sp.add_argument("--to", required=True, help="the case it belongs to")
    sp.add_argument("--from", dest="from_case", default=None, help="the case to move it from (when in several)")
    sp.set_defaults(fn=cmd_reassign)
    sp = with_config(sub.add_parser("prune", help="apply the [retention] policy now (audited)"))
    sp.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    sp.set_defaults(fn=cmd_prune)
    with_config(sub.add_parser("check-config", help="validate the configuration and C-ECHO every DICOM "
                                                    "destination")).set_defaults(fn=cmd_check_config)
    sp = sub.add_parser("conformance", help="print the DICOM Conformance Statement (docs/conformance.md)")
    sp.add_argument("--output", help="write it to this file")
    sp.set_defaults(fn=cmd_conformance)
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
    import sqlite3

    from node.index import IndexSchemaError
    from node.operations import ActionRefused, NotFoundError
    from node.service import StartError

    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except ConfigError as exc:
        print(f"liver-node: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StartError as exc:
        print(f"liver-node: cannot start: {exc}", file=sys.stderr)
        return EXIT_IN_USE
    except (NotFoundError, NotFound) as exc:
        print(f"liver-node: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except ActionRefused as exc:
        print(f"liver-node: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except IndexSchemaError as exc:  # a data dir of a newer version (or not an index): restarting cannot help
        print(f"liver-node: config key 'node.data_dir': {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except sqlite3.DatabaseError as exc:
        print(f"liver-node: cannot read the index: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
