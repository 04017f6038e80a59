"""`status`: the status model (node/casestatus.py) as a readable table, or as JSON with ``--json``.

The table shows the same facts as the JSON: per case its identity, state and reason, each workflow's state,
reason and inputs, each series with its role and why, then identity conflicts and the outbox.
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from node.casestatus import NodeStatus, OutputStatus


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> list[str]:
    """Left-aligned text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def render_json(status: NodeStatus) -> str:
    """`status --json`: one JSON object (schema in node/casestatus.py)."""
    return json.dumps(status.to_json(), indent=1, ensure_ascii=False) + "\n"


def render_status(status: NodeStatus, with_outbox: bool = True) -> str:
    lines: list[str] = []
    if not status.cases:
        lines.append("No cases yet: nothing has been received.")
    for case in status.cases:
        issuer = f" (issuer {case.issuer_of_patient_id})" if case.issuer_of_patient_id else ""
        lines.append(f"CASE {case.case_id}  patient {case.patient_id or '-'}{issuer}"
                     f"  {case.patient_name or '(no name)'}"
                     f"  state: {case.state.upper()}  analysis v{case.version}  updated {_when(case.updated_at)}")
        if case.reason:
            lines.append(f"  {case.reason}")
        wf_rows = [(w.name, w.state, w.reason or "-",
                    ", ".join(f"{r}={uid[-16:]}" for r, uid in w.inputs.items()) or "-")
                   for w in case.workflows.values()]
        lines += table(("WORKFLOW", "STATE", "REASON", "INPUTS (role=series UID end)"), wf_rows)
        lines += [f"  ! {w.name}: {text}" for w in case.workflows.values() for text in w.warnings]
        rows = [(s.role, s.modality, (s.description or "-")[:32], s.instances, "yes" if s.stable else "no",
                 _when(s.last_received), s.series_uid[-20:], s.role_reason) for s in case.series]
        lines += table(("ROLE", "MOD", "SERIES", "INSTANCES", "STABLE", "LAST RECEIVED", "SERIES UID (end)", "WHY"),
                       rows)
        lines.append("")
    if status.conflicts:
        lines.append("IDENTITY CONFLICTS (open; HELD: cases it still holds, RELEASED: released by the operator)")
        lines += table(("KIND", "UID", "IDENTITIES", "HELD", "RELEASED"),
                       [(c.kind, c.key, "; ".join(f"{p}/{i or '-'}" for p, i in c.identities),
                         ", ".join(c.held) or "-", ", ".join(c.released) or "-") for c in status.conflicts])
        lines.append("")
    if status.unrouted_outputs:
        lines.append("WARNING: no destination takes " + ", ".join(status.unrouted_outputs)
                     + " outputs (they stay in data_dir/outbox only)")
        lines.append("")
    if with_outbox:
        lines.append("OUTBOX")
        routed = [o for o in status.outbox if o.destination]
        if not routed:
            lines.append("  empty")
        else:
            lines += table(("DESTINATION", "CASE", "KIND", "STATE", "SENT AS", "ITEMS", "ATTEMPTS", "NEXT ATTEMPT",
                            "LAST ERROR"), _outbox_groups(routed))
    return "\n".join(lines).rstrip() + "\n"


def _fmt(v: Any) -> str:
    return "-" if v in (None, "") else str(v)[:60]


def _outbox_groups(rows: Sequence[OutputStatus]) -> list[list[str]]:
    """One line per destination, case, kind, state and fallback, with counts: readable for big cases."""
    groups: dict[tuple, list[OutputStatus]] = {}
    for r in rows:
        groups.setdefault((r.destination, r.case_id, r.kind, r.state, r.sent_as), []).append(r)
    out = []
    for (dest, case, kind, state, sent_as), items in groups.items():
        nexts = sorted(i.next_attempt for i in items if i.next_attempt and i.state in ("pending", "retrying"))
        errors = [i.last_error for i in items if i.last_error]
        out.append([_fmt(dest), _fmt(case), _fmt(kind), _fmt(state), _fmt(sent_as), str(len(items)),
                    str(max(i.attempts for i in items)), _when(nexts[0]) if nexts else "-",
                    _fmt(errors[-1] if errors else None)])
    return out
