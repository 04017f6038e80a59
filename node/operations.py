"""Operator actions shared by the CLI and the dashboard: resend, reprocess, release, reassign. Each is audited,
done or refused (``result=refused`` with the reason).

Every action names the case; an unknown case or series raises a :class:`NotFoundError` (the CLI's exit status 4),
an action that cannot be done now raises :class:`ActionRefused` with the reason (exit status 1).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from node.audit import audit
from node.identity import identity_text
from node.index import Index, ReassignError

if TYPE_CHECKING:
    from node.outbox import Outbox

logger = logging.getLogger(__name__)


class NotFoundError(LookupError):
    """What the action names does not exist (CLI exit status 4, dashboard 404)."""


class UnknownCaseError(NotFoundError):
    """No such case in the index."""

    def __init__(self, case_id: str) -> None:
        super().__init__(f"no case {case_id!r}; `liver-node status` lists the cases")
        self.case_id = case_id


class UnknownSeriesError(NotFoundError):
    """No series (or study) with this UID in the index."""

    def __init__(self, uid: str) -> None:
        super().__init__(f"no series or study {uid!r} in the index; `liver-node status` lists each case's series")
        self.uid = uid


class ActionRefused(RuntimeError):
    """The action cannot be done now; the message says why."""


@contextlib.contextmanager
def audited_refusal(action: str, case: str, operator: str, **fields: Any) -> Iterator[None]:
    """A refused action is audited like a done one (``result=refused``, ``detail`` = why), then re-raised."""
    try:
        yield
    except (NotFoundError, ActionRefused) as exc:
        audit("operator-action", action=action, case=case, operator=operator, **fields, result="refused",
              detail=str(exc))
        raise


def _known(index: Index, case_id: str, outbox: Outbox | None = None) -> None:
    if index.get_case(case_id) is None and not (outbox is not None and outbox.has_case(case_id)):
        raise UnknownCaseError(case_id)


def reprocess(index: Index, case_id: str, operator: str) -> str:
    """Queue the case for analysis again (a new version of its outputs)."""
    with audited_refusal("reprocess", case_id, operator):
        _known(index, case_id)
        if not index.force_queue(case_id):
            raise ActionRefused(f"case {case_id!r} is being analysed right now; try again when it finishes")
    audit("operator-action", action="reprocess", case=case_id, operator=operator, result="queued")
    return f"case {case_id} queued for re-analysis (a running node picks it up within seconds)"


def resend(index: Index, outbox: Outbox, case_id: str | None, operator: str, failed_only: bool = False) -> str:
    """Queue a case's outputs (or every parked one with failed_only) for delivery again."""
    with audited_refusal("resend", case_id or "(all failed)", operator, failed_only=failed_only):
        if case_id is not None:
            _known(index, case_id, outbox)
        n = outbox.resend(case_id=case_id, failed_only=failed_only)
        if n == 0 and case_id is not None:
            raise ActionRefused(f"case {case_id!r} has no output to send again (none produced yet, or all in "
                                "flight)")
    audit("operator-action", action="resend", case=case_id or "(all failed)", operator=operator,
          failed_only=failed_only, items=n, result="queued" if n else "nothing-to-send")
    return f"{n} item(s) queued for sending again"


def release(index: Index, case_id: str, operator: str, evaluate: Callable[[str], bool] | None = None) -> str:
    """Release a held case: it is released from the identity conflicts that hold it (they stay open for the other
    cases involved) and goes to 'stable' when never analysed, else back to its last analysis' outcome (re-run only
    if an input changed; node.identity.resume_state), then evaluated (`evaluate`, the running node's
    Completion.evaluate_case; without it the node evaluates it when its next study becomes stable). Its series
    stay its own: nothing is merged. A new identity joining the conflict holds it again."""
    with audited_refusal("release", case_id, operator):
        _known(index, case_id)
        case = index.get_case(case_id)
        if case is None or case.state != "held":
            raise ActionRefused(f"case {case_id!r} is {case.state if case else 'gone'}, not held: nothing to "
                                "release")
        conflicts = index.release_case(case_id)
        if conflicts is None:
            raise ActionRefused(f"case {case_id!r} changed state meanwhile; look again")
    audit("operator-action", action="release", case=case_id, operator=operator, result="released",
          conflicts=",".join(f"{c.kind}:{c.key}" for c in conflicts) or "none")
    queued = evaluate(case_id) if evaluate is not None else False
    return f"case {case_id} released" + (" and queued for analysis" if queued else "")


def reassign(index: Index, uid: str, to_case: str, operator: str, from_case: str | None = None,
             evaluate: Callable[[str], bool] | None = None) -> str:
    """Move a series (or every series of a study, given its StudyInstanceUID) into another case: the operator says
    whose images they are. Later instances of it from the same identity follow; the files stay as received and
    the analysis reads them with the target case's identity. Conflicts are re-examined (a study left in one case
    is no longer a conflict); both cases are evaluated again."""
    with audited_refusal("reassign", from_case or "", operator, to_case=to_case, uid=uid):
        _known(index, to_case)
        if from_case is not None:
            _known(index, from_case)
        if not index.series_cases(uid):
            raise UnknownSeriesError(uid)
        try:
            change = index.reassign(uid, to_case, from_case, operator)
        except ReassignError as exc:
            raise ActionRefused(str(exc)) from None
    target = index.get_case(to_case)
    audit("operator-action", action="reassign", case=change.old_case, to_case=to_case, uid=uid, operator=operator,
          identity=identity_text(target.patient_id, target.issuer_of_patient_id) if target else "", result="moved")
    for case in change.evaluate:
        if evaluate is not None:
            evaluate(case)
    return f"{uid} moved from case {change.old_case} to case {to_case}"
