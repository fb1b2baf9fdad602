"""Reading the broker's compact batch encoding (layout in docs/plugins.md, "The batch encoding").

Fields are sliced out of the buffer when they are read, so a policy pays only for what it looks at.
"""

from __future__ import annotations

import struct
from typing import Callable, Optional

# flags: bit 0 means the broker left the body out; a filter asks for it with batch.body(index).
FLAG_BODY_OMITTED = 1

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_HEAD = struct.Struct("<Iqq I")  # flags, born_ms, store_ms, attempt

BodyFetch = Callable[[int], Optional[bytes]]


class MalformedBatch(ValueError):
    """The buffer does not follow the batch encoding."""


class Message:
    """One message of a batch. Text fields are decoded on first use; the body is fetched from the
    broker only when the broker left it out and the policy asks for it."""

    __slots__ = ("index", "flags", "born_ms", "store_ms", "attempt", "_buf", "_spans", "_fetch", "_props")

    def __init__(self, index: int, buf: memoryview, start: int, end: int, fetch: Optional[BodyFetch]):
        self.index = index
        self._buf = buf
        self._fetch = fetch
        self._props: Optional[dict] = None
        if end - start < _HEAD.size:
            raise MalformedBatch(f"message {index} is shorter than its fixed fields")
        self.flags, self.born_ms, self.store_ms, self.attempt = _HEAD.unpack_from(buf, start)
        at = start + _HEAD.size
        spans = []
        for width in (_U16, _U16, _U16, _U32, _U32):  # topic, tag, keys, properties, body
            if at + width.size > end:
                raise MalformedBatch(f"message {index} ends inside its fields")
            (n,) = width.unpack_from(buf, at)
            at += width.size
            if at + n > end:
                raise MalformedBatch(f"message {index} has a field longer than the message")
            spans.append((at, at + n))
            at += n
        self._spans = spans

    def _text(self, field: int) -> str:
        lo, hi = self._spans[field]
        return str(self._buf[lo:hi], "utf-8", "replace")

    @property
    def topic(self) -> str:
        return self._text(0)

    @property
    def tag(self) -> Optional[str]:
        """The tag, or None when the message has none."""
        lo, hi = self._spans[1]
        return self._text(1) if hi > lo else None

    @property
    def keys(self) -> list[str]:
        return [k for k in self._text(2).split(" ") if k]

    @property
    def properties(self) -> dict[str, str]:
        """User properties and the broker's own (such as UNIQ_KEY), by name."""
        if self._props is None:
            lo, hi = self._spans[3]
            props = {}
            for item in bytes(self._buf[lo:hi]).split(b"\x02"):
                name, sep, value = item.partition(b"\x01")
                if sep:
                    props[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
            self._props = props
        return self._props

    @property
    def body(self) -> Optional[bytes]:
        """The body; fetched from the broker on first use when the batch left it out (filters)."""
        if not self.flags & FLAG_BODY_OMITTED:
            lo, hi = self._spans[4]
            return bytes(self._buf[lo:hi])
        if self._fetch is None:
            return None
        return self._fetch(self.index)

    def text(self) -> Optional[str]:
        """The body as UTF-8 text (undecodable bytes replaced), or None."""
        body = self.body
        return None if body is None else body.decode("utf-8", "replace")

    # Defined after the @property fields: inside the class body this name hides the builtin.
    def property(self, name: str) -> Optional[str]:
        """A property by name, or None."""
        return self.properties.get(name)

    def __repr__(self) -> str:
        return f"Message(topic={self.topic!r}, tag={self.tag!r}, keys={self.keys!r}, properties={self.properties!r})"


def parse(buf: bytes, fetch: Optional[BodyFetch] = None) -> list[Message]:
    """The messages of a batch, in order. Raises MalformedBatch on a buffer that does not follow the
    encoding."""
    view = memoryview(buf)
    if len(view) < 4:
        raise MalformedBatch("a batch starts with a 4-byte count")
    (count,) = _U32.unpack_from(view, 0)
    messages = []
    at = 4
    for index in range(count):
        if at + 4 > len(view):
            raise MalformedBatch(f"the batch ends before message {index} of {count}")
        (n,) = _U32.unpack_from(view, at)
        at += 4
        if at + n > len(view):
            raise MalformedBatch(f"message {index} is longer than the batch")
        messages.append(Message(index, view, at, at + n, fetch))
        at += n
    return messages
