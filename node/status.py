"""`status`: a readable table of cases, their series with roles, and the outbox."""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from node.classify import plan_case
from node.config import Config
from node.index import Index


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> list[str]:
    """Left-aligned text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def render_status(config: Config, index: Index, outbox_rows: list[dict[str, Any]] | None = None) -> str:
    lines: list[str] = []
    cases = index.cases()
    if not cases:
        lines.append("No cases yet: nothing has been received.")
    for case in cases:
        series = index.series_of_case(case.case_id)
        plan = plan_case(series, config.analysis.liver_roi_names, config.workflows)
        lines.append(f"CASE {case.case_id}  {case.patient_name or '(no name)'}  state: {case.state.upper()}"
                     f"  analysis v{case.version}  updated {_when(case.updated_at)}")
        if case.reason:
            lines.append(f"  {case.reason}")
        rows = [(plan.roles.get(s.series_uid, "?"), s.modality, (s.series_description or "-")[:32], s.n_instances,
                 "yes" if s.stable else "no", _when(s.last_received), s.series_uid[-20:]) for s in series]
        lines += table(("ROLE", "MOD", "SERIES", "INSTANCES", "STABLE", "LAST RECEIVED", "SERIES UID (end)"), rows)
        lines.append("")
    if outbox_rows is not None:
        lines.append("OUTBOX")
        if not outbox_rows:
            lines.append("  empty")
        else:
            lines += table(("DESTINATION", "CASE", "KIND", "STATE", "SENT AS", "ITEMS", "ATTEMPTS", "NEXT ATTEMPT",
                            "LAST ERROR"), _outbox_groups(outbox_rows))
    return "\n".join(lines).rstrip() + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return _when(v)
    return "-" if v in (None, "") else str(v)[:60]


def _outbox_groups(rows: list[dict[str, Any]]) -> list[list[str]]:
    """One line per destination, case, kind, state and fallback, with counts: readable for big cases."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        key = (r.get("destination"), r.get("case"), r.get("kind"), r.get("state"), r.get("sent_as") or "")
        groups.setdefault(key, []).append(r)
    out = []
    for (dest, case, kind, state, sent_as), items in groups.items():
        nexts = sorted(str(i["next_attempt"]) for i in items if i.get("next_attempt"))
        errors = [i["last_error"] for i in items if i.get("last_error")]
        out.append([_fmt(dest), _fmt(case), _fmt(kind), _fmt(state), _fmt(sent_as), str(len(items)),
                    str(max(int(i.get("attempts") or 0) for i in items)), nexts[0] if nexts else "-",
                    _fmt(errors[-1] if errors else None)])
    return out
