"""The web dashboard under /ui/: server-rendered HTML (Jinja2 templates, autoescaped), no JavaScript.

Pages read the status model (node/casestatus.py) only: the case list with states and why cases wait, a case's
workflows (inputs, key results, flags), its Secondary Captures as pictures, where each output went and its
delivery state, and recent audit events. The only writes are the operator actions (resend, reprocess, release a
held case, reassign a series to another case), POST forms carrying a CSRF token, each audited with the operator's
name (node/operations.py).
"""
from __future__ import annotations

import hashlib
import hmac
import io
import logging
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np

from node import __version__
from node.audit import audit, recent
from node.casestatus import NodeStatus, collect, iso
from node.config import Config
from node.health import Request, Response
from node.index import Index
from node.notifications import case_ref
from node.operations import ActionRefused, NotFoundError, audited_refusal, reassign, release, reprocess, resend

if TYPE_CHECKING:
    from node.outbox import Outbox
    from node.sender import Sender

__all__ = ["Dashboard", "key_values"]

logger = logging.getLogger(__name__)

_HERE = Path(__file__).parent
#: measurement keys that are bulk data or bookkeeping, not results a reader looks for
_SKIP = {"stages", "timings_s", "times_s", "motion", "enhancement_hu", "series", "inputs", "methods", "warnings",
         "working_shape_zyx", "native_shape_zyx", "spacing_mm_zyx", "working_spacing_mm_zyx", "shape_zyx"}


def key_values(measurements: dict[str, Any], limit: int = 80) -> list[tuple[str, str]]:
    """Scalar values a workflow recorded, as (path, value) in recording order, bulk data left out."""
    out: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any, depth: int) -> None:
        if len(out) >= limit:
            return
        if isinstance(value, dict):
            if depth >= 5:
                return
            for k, v in value.items():
                if k not in _SKIP:
                    walk(f"{prefix} / {k}" if prefix else str(k), v, depth + 1)
        elif isinstance(value, bool) or value is None:
            out.append((prefix, "-" if value is None else ("yes" if value else "no")))
        elif isinstance(value, float):
            out.append((prefix, f"{value:.4g}"))
        elif isinstance(value, (int, str)):
            out.append((prefix, str(value)[:120]))
        elif isinstance(value, list) and len(value) <= 4 and all(isinstance(v, (int, float)) for v in value):
            out.append((prefix, ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)))

    walk("", measurements, 0)
    return out


def _ago(t: float | None) -> str:
    if not t:
        return "-"
    s = max(0.0, time.time() - t)
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 5400:
        return f"{s / 60:.0f} min ago"
    if s < 172800:
        return f"{s / 3600:.1f} h ago"
    return f"{s / 86400:.0f} days ago"


class Dashboard:
    """Renders /ui/ pages from the status model; performs audited operator actions."""

    def __init__(self, config: Config, index: Index, outbox: Outbox | None, sender: Sender | None = None,
                 evaluate: Callable[[str], bool] | None = None, secret: bytes = b"") -> None:
        self.config = config
        self.index = index
        self.outbox = outbox
        self.sender = sender
        self.evaluate = evaluate
        self.secret = secret or b"liver-node"
        self.csrf = hmac.new(self.secret, b"dashboard-csrf", hashlib.sha256).hexdigest()[:32]
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"),
                                      autoescape=jinja2.select_autoescape(default=True),
                                      undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(iso=iso, ago=_ago, q=lambda s: urllib.parse.quote(str(s), safe=""),
                                mb=lambda b: f"{b / 1e6:,.0f} MB")
        self.env.globals.update(version=__version__, node=config.node.ae_title, csrf=self.csrf,
                                actions=config.dashboard.actions)

    # ------------------------------------------------------------------ routing
    def handle(self, req: Request) -> Response:
        parts = [urllib.parse.unquote(p) for p in req.path.split("/")[2:]]
        if parts in ([], [""]):
            return self._page("cases.html", status=self._status(), now=time.time())
        head = parts[0]
        if head == "static" and parts[1:] == ["style.css"]:
            return Response(200, (_HERE / "templates" / "style.css").read_bytes(), "text/css; charset=utf-8")
        if head == "audit" and len(parts) == 1:
            return self._page("audit.html", events=recent(500), title="Audit events")
        if head == "ref" and len(parts) == 2:
            for c in self.index.cases():
                if case_ref(self.secret, c.case_id) == parts[1]:
                    return Response(303, headers={"Location": "/ui/case/" + urllib.parse.quote(c.case_id, safe="")})
            return self._error(404, "No case has this reference.")
        if head == "case" and len(parts) >= 2:
            case_id = parts[1]
            if len(parts) == 2 and req.method in ("GET", "HEAD"):
                return self._case(case_id, req.query.get("msg", ""))
            if len(parts) == 4 and parts[2] == "image" and parts[3].endswith(".png"):
                return self._image(case_id, parts[3][:-4])
            if len(parts) == 4 and parts[2] == "action" and req.method == "POST":
                return self._action(case_id, parts[3], req)
        return self._error(404, f"Nothing at {req.path}.")

    def _status(self, case_id: str | None = None) -> NodeStatus:
        return collect(self.config, self.index, self.outbox, self.sender, case_id=case_id)

    def _page(self, template: str, code: int = 200, **context: Any) -> Response:
        body = self.env.get_template(template).render(**context)
        return Response(code, body.encode())

    def _error(self, code: int, message: str) -> Response:
        return self._page("message.html", code, title="Not found" if code == 404 else "Refused", message=message)

    # ------------------------------------------------------------------ pages
    def _case(self, case_id: str, msg: str) -> Response:
        status = self._status(case_id)
        case = status.case(case_id)
        if case is None:
            return self._error(404, f"No case {case_id!r}.")
        series = {s.series_uid: s for s in case.series}
        pictures = {o.sop_instance_uid: o for o in case.outputs if o.is_picture}
        events = [e for e in recent(500) if e.fields.get("case") == case_id][:15]
        return self._page("case.html", case=case, series=series, pictures=list(pictures.values()),
                          key_values=key_values, events=events, msg=msg[:200],
                          conflicts=[c for c in status.conflicts if case_id in c.cases],
                          title=f"Case {case_id}")

    def _image(self, case_id: str, sop_uid: str) -> Response:
        status = self._status(case_id)
        case = status.case(case_id)
        out = next((o for o in (case.outputs if case else []) if o.sop_instance_uid == sop_uid and o.is_picture),
                   None)
        if out is None or out.path is None:
            return self._error(404, "No such picture.")
        try:
            png = _png(out.path)
        except Exception as exc:  # a picture that cannot be shown must not break the page
            logger.warning("cannot render %s as PNG: %s", out.path, exc)
            return self._error(404, f"Cannot show this picture: {exc}")
        return Response(200, png, "image/png", {"Cache-Control": "private, max-age=3600"})

    def _action(self, case_id: str, action: str, req: Request) -> Response:
        operator = f"dashboard:{req.operator}"

        def refused(why: str) -> Response:
            audit("operator-action", action=action, case=case_id, operator=operator, result="refused", detail=why)
            return self._error(403, why)

        if not self.config.dashboard.actions:
            return refused("Operator actions are switched off ([dashboard] actions = false).")
        if not hmac.compare_digest(req.form.get("csrf", "").encode(), self.csrf.encode()):
            return refused("The form is stale or did not come from this dashboard; reload the page.")
        origin = req.headers.get("Origin")
        host = req.headers.get("Host", "")
        if origin and origin != "null" and urllib.parse.urlsplit(origin).netloc != host:  # null: the token decides
            return refused(f"Cross-site request refused (Origin {origin}).")
        shown = case_id  # the case page shown after the action
        try:
            if action == "resend":
                if self.outbox is None:
                    with audited_refusal(action, case_id, operator):
                        raise ActionRefused("this node has no outbox")
                msg = resend(self.index, self.outbox, case_id, operator)
                if self.sender is not None:
                    self.sender.wake()
            elif action == "reprocess":
                msg = reprocess(self.index, case_id, operator)
            elif action == "release":
                msg = release(self.index, case_id, operator, self.evaluate)
            elif action == "reassign":
                uid, target = req.form.get("series", "").strip(), req.form.get("to", "").strip()
                if not uid or not target:
                    with audited_refusal(action, case_id, operator):
                        raise ActionRefused("choose a series and the case it belongs to")
                msg = reassign(self.index, uid, target, operator, from_case=case_id, evaluate=self.evaluate)
                shown = target  # the source case may be gone (emptied)
            else:
                audit("operator-action", action=action, case=case_id, operator=operator, result="refused",
                      detail="unknown action")
                return self._error(404, f"Unknown action {action!r}.")
        except NotFoundError as exc:
            return self._error(404, str(exc))
        except ActionRefused as exc:
            msg = f"Not done: {exc}"
        location = f"/ui/case/{urllib.parse.quote(shown, safe='')}?msg={urllib.parse.quote(msg)}"
        return Response(303, headers={"Location": location})


def _png(path: Path) -> bytes:
    """A Secondary Capture's pixels as PNG (8-bit grey or RGB; the first frame of a multi-frame object)."""
    import pydicom
    from PIL import Image

    ds = pydicom.dcmread(path)
    px = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        px = px[0]
    if px.dtype != np.uint8:
        lo, hi = float(px.min()), float(px.max())
        px = ((px - lo) / (hi - lo or 1.0) * 255.0).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        px = 255 - px
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="PNG", optimize=False)
    return buf.getvalue()
