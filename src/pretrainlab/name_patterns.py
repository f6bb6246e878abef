"""Patterns over dotted parameter / module names: a name, a module prefix (`head`,
`backbone.model.layer4`) or a glob (`*.norm.*`, `backbone.*bias`). Shared by what decides what
trains (`engine/freeze.py`), the optimizer's lr multipliers and the adapters' layer targets."""

from __future__ import annotations

from fnmatch import fnmatchcase


def matches(name: str, pattern: str) -> bool:
    """True when `pattern` is `name`, a module prefix of it, or a glob matching it."""
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*")
