"""The parameters an administrator bound the plugin with."""

from __future__ import annotations

from typing import Iterable, Optional


class Config:
    """Name/value parameters of the binding (they do not change for an instance)."""

    def __init__(self, params: Iterable[tuple[str, str]] = ()):
        self._params = dict(params)

    def value(self, name: str) -> Optional[str]:
        """The value of parameter `name`, or None."""
        return self._params.get(name)

    def list(self, name: str) -> list[str]:
        """The comma-separated items of parameter `name`, trimmed; empty when absent."""
        return [item.strip() for item in (self.value(name) or "").split(",") if item.strip()]

    def items(self) -> list[tuple[str, str]]:
        return list(self._params.items())

    def __repr__(self) -> str:
        return f"Config({self._params!r})"
