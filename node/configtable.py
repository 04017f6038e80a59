"""Validation of one TOML table, shared by the node's configuration and every workflow's own settings.

A :class:`ConfigTable` reads typed values, remembers which keys were used (so unknown ones are reported) and
raises :class:`ConfigError` naming the full key (``analysis.gsa.fls_threshold``), so an administrator can fix
the file without reading code. Keys carried over from an older layout keep the name the file used.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ConfigError", "ConfigTable"]


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config key '{key}': {problem}")
        self.key = key


class ConfigTable:
    """Reads one TOML table, remembering which keys were used so unknown ones are reported.

    `origins` maps a key to the full name it had in the file when it was moved here from elsewhere (a
    deprecated location), so messages name what the administrator wrote.
    """

    def __init__(self, prefix: str, table: Any, origins: Mapping[str, str] | None = None) -> None:
        if not isinstance(table, Mapping):
            raise ConfigError(prefix, "must be a table")
        self.prefix = prefix
        self.table = dict(table)
        self.used: set[str] = set()
        self.origins = dict(origins or {})

    def key(self, name: str) -> str:
        if name in self.origins:
            return self.origins[name]
        return f"{self.prefix}.{name}" if self.prefix else name

    def get(self, name: str, default: Any = None) -> Any:
        self.used.add(name)
        return self.table.get(name, default)

    def has(self, name: str) -> bool:
        return name in self.table

    def sub(self, name: str) -> ConfigTable:
        """The sub-table `name` (an empty one when absent)."""
        return ConfigTable(self.key(name), self.get(name, {}))

    def string(self, name: str, default: str | None) -> str | None:
        v = self.get(name, default)
        if v is not None and not isinstance(v, str):
            raise ConfigError(self.key(name), f"must be a string, got {v!r}")
        return v

    def required_string(self, name: str, default: str) -> str:
        v = self.string(name, default)
        return default if v is None else v

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        v = self.required_string(name, default)
        if v not in allowed:
            raise ConfigError(self.key(name), f"must be one of {', '.join(repr(a) for a in allowed)}, got {v!r}")
        return v

    def integer(self, name: str, default: int | None, lo: int | None = None, hi: int | None = None) -> int | None:
        v = self.get(name, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(self.key(name), f"must be an integer, got {v!r}")
        if lo is not None and v < lo or hi is not None and v > hi:
            raise ConfigError(self.key(name), f"must be between {lo} and {hi}, got {v}")
        return v

    def required_integer(self, name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        v = self.integer(name, default, lo, hi)
        return default if v is None else v

    def number(self, name: str, default: float, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False) -> float:
        v = self.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(self.key(name), f"must be a number, got {v!r}")
        v = float(v)
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise ConfigError(self.key(name), f"must be {'>' if lo_open else '>='} {lo}, got {v}")
        if hi is not None and v > hi:
            raise ConfigError(self.key(name), f"must be <= {hi}, got {v}")
        return v

    def optional_number(self, name: str, lo: float | None = None, hi: float | None = None,
                        lo_open: bool = False) -> float | None:
        """A number when the key is given, else None."""
        if not self.has(name):
            self.get(name)
            return None
        return self.number(name, 0.0, lo=lo, hi=hi, lo_open=lo_open)

    def boolean(self, name: str, default: bool) -> bool:
        v = self.get(name, default)
        if not isinstance(v, bool):
            raise ConfigError(self.key(name), f"must be true or false, got {v!r}")
        return v

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        v = self.get(name, list(default))
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(self.key(name), f"must be a list of strings, got {v!r}")
        return tuple(v)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise ConfigError(self.key(unknown[0]), "unknown key (check spelling; see the documented config.toml)")
