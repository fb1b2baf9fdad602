"""What a route or a transaction check answers, as plain Python values."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional, Union


@dataclass
class Accept:
    """Store the message, changed as given (nothing given: unchanged)."""

    tag: Optional[str] = None
    set_properties: dict[str, str] = field(default_factory=dict)
    remove_properties: list[str] = field(default_factory=list)
    body: Optional[bytes] = None


@dataclass
class Redirect:
    """Store the message, unchanged, in these topics instead of its own."""

    topics: list[str]


@dataclass
class Reject:
    """Refuse the send; the producer gets the reason."""

    reason: str


@dataclass
class Drop:
    """Acknowledge the send but store nothing; the broker logs and counts the drop."""

    reason: str


RouteDecision = Union[Accept, Redirect, Reject, Drop]


class Resolution(Enum):
    """A transaction's outcome."""

    COMMIT = "commit"
    ROLLBACK = "rollback"
    UNKNOWN = "unknown"
