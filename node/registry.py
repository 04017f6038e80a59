"""The workflows this node runs, listed once.

To add a workflow: write its package (``node/<name>/workflow.py`` with one :class:`~node.workflow.Workflow`
instance) and add that instance to ``WORKFLOWS`` below. Order is the listed one, except that a workflow
always runs after those it ``depends_on`` (the registry sorts them so).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from node.gsa.workflow import GSA
from node.gsaplan.workflow import GSAPLAN
from node.maa.workflow import MAA
from node.perfusion.workflow import PERFUSION
from node.workflow import CORE_OUTPUT_KINDS, RoleRule, Workflow
from node.y90post.workflow import Y90POST

__all__ = ["Registry", "RegistryError", "DEFAULT_REGISTRY", "WORKFLOWS"]

#: Every workflow of the node (run order follows dependencies).
WORKFLOWS: tuple[Workflow[Any, Any], ...] = (PERFUSION, GSA, MAA, Y90POST, GSAPLAN)


class RegistryError(ValueError):
    """The workflows do not form a consistent set (duplicate names, unknown or circular dependencies)."""


class Registry:
    """An ordered, validated set of workflows: iteration yields them dependencies first."""

    def __init__(self, workflows: Iterable[Workflow[Any, Any]]) -> None:
        listed = list(workflows)
        names = [w.name for w in listed]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RegistryError(f"workflow name(s) registered twice: {', '.join(duplicates)}")
        by_name = {w.name: w for w in listed}
        for w in listed:
            unknown = [d for d in w.depends_on if d not in by_name]
            if unknown:
                raise RegistryError(f"workflow {w.name!r} depends on unregistered {', '.join(unknown)}")
            if not w.needs:
                raise RegistryError(f"workflow {w.name!r} needs no role: it could never become runnable")
        self._ordered: tuple[Workflow[Any, Any], ...] = tuple(_dependency_order(listed, by_name))

    def __iter__(self) -> Iterator[Workflow[Any, Any]]:
        return iter(self._ordered)

    def __len__(self) -> int:
        return len(self._ordered)

    def __contains__(self, name: object) -> bool:
        return any(w.name == name for w in self._ordered)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(w.name for w in self._ordered)

    def get(self, name: str) -> Workflow[Any, Any] | None:
        return next((w for w in self._ordered if w.name == name), None)

    def with_workflow(self, workflow: Workflow[Any, Any]) -> Registry:
        """A new registry with `workflow` added (e.g. a site's own workflow, or a test's)."""
        return Registry([*self._ordered, workflow])

    def role_rules(self) -> list[RoleRule]:
        """Every workflow's role rules, by priority then registry order."""
        rules = [r for w in self._ordered for r in w.role_rules]
        return sorted(rules, key=lambda r: r.priority)  # stable: registry order within a priority

    @property
    def output_kinds(self) -> tuple[str, ...]:
        """Routing keys a destination may list: the core ones and those the workflows declare."""
        extra = [k for w in self._ordered for k in w.output_kinds if k not in CORE_OUTPUT_KINDS]
        return CORE_OUTPUT_KINDS + tuple(dict.fromkeys(extra))

    @property
    def legacy_keys(self) -> dict[str, str]:
        """Flat ``[analysis]`` key of the old layout -> where it lives now ("gsa.fls_threshold")."""
        return {old: f"{w.name}.{new}" for w in self._ordered for old, new in w.legacy_keys.items()}


def _dependency_order(listed: list[Workflow[Any, Any]], by_name: dict[str, Workflow[Any, Any]]
                      ) -> list[Workflow[Any, Any]]:
    """Listed order, each workflow moved after its dependencies (depth first); cycles are refused."""
    out: list[Workflow[Any, Any]] = []
    state: dict[str, str] = {}

    def visit(w: Workflow[Any, Any], path: tuple[str, ...]) -> None:
        if state.get(w.name) == "done":
            return
        if state.get(w.name) == "visiting":
            raise RegistryError(f"circular workflow dependencies: {' -> '.join(path + (w.name,))}")
        state[w.name] = "visiting"
        for dep in w.depends_on:
            visit(by_name[dep], path + (w.name,))
        state[w.name] = "done"
        out.append(w)

    for w in listed:
        visit(w, ())
    return out


#: The node's registry (what `serve` runs).
DEFAULT_REGISTRY = Registry(WORKFLOWS)
