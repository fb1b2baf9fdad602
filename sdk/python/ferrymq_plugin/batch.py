"""Reading the broker's compact batch encoding (layout in docs/plugins.md, "The batch encoding").

Nothing is decoded until it is read: `parse` only finds where each message starts, a message finds
its fields on first use, and `property(name)` searches the encoded properties for the name without
decoding the others — an interpreted filter pays for what it looks at and little else.
"""

from __future__ import annotations

import struct
from typing import Callable, Optional

# flags: bit 0 means the broker left the body out; a filter asks for it with batch.body(index).
FLAG_BODY_OMITTED = 1

_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_HEAD = struct.Struct("<IqqI").unpack_from  # flags, born_ms, store_ms, attempt
_HEAD_SIZE = 24

BodyFetch = Callable[[int], Optional[bytes]]

# Property names as searched for (`name\x01`), encoded once.
_KEYS: dict = {}


class MalformedBatch(ValueError):
    """The buffer does not follow the batch encoding."""


class Message:
    """One message of a batch. Fields are found and decoded on first use; the body is fetched from
    the broker only when the broker left it out and the policy asks for it."""

    __slots__ = ("index", "_raw", "_start", "_end", "_fetch", "_spans", "_head", "_props")

    def __init__(self, index: int, raw: bytes, start: int, end: int, fetch: Optional[BodyFetch]):
        self.index = index
        self._raw = raw
        self._start = start
        self._end = end
        self._fetch = fetch
        self._spans = None
        self._head = None
        self._props = None

    def _layout(self):
        """(topic, tag, keys, properties, body) as (start, end) offsets into the batch."""
        spans = self._spans
        if spans is None:
            raw, end = self._raw, self._end
            try:
                at = self._start + _HEAD_SIZE
                (n,) = _U16(raw, at)
                topic = (at + 2, at + 2 + n)
                at = topic[1]
                (n,) = _U16(raw, at)
                tag = (at + 2, at + 2 + n)
                at = tag[1]
                (n,) = _U16(raw, at)
                keys = (at + 2, at + 2 + n)
                at = keys[1]
                (n,) = _U32(raw, at)
                props = (at + 4, at + 4 + n)
                at = props[1]
                (n,) = _U32(raw, at)
                body = (at + 4, at + 4 + n)
            except struct.error:
                raise MalformedBatch(f"message {self.index} ends inside its fields") from None
            if body[1] > end:
                raise MalformedBatch(f"message {self.index} has a field longer than the message")
            spans = self._spans = (topic, tag, keys, props, body)
        return spans

    def _fixed(self):
        if self._head is None:
            if self._start + _HEAD_SIZE > self._end:
                raise MalformedBatch(f"message {self.index} is shorter than its fixed fields")
            self._head = _HEAD(self._raw, self._start)
        return self._head

    @property
    def flags(self) -> int:
        return self._fixed()[0]

    @property
    def born_ms(self) -> int:
        return self._fixed()[1]

    @property
    def store_ms(self) -> int:
        return self._fixed()[2]

    @property
    def attempt(self) -> int:
        """1 on first delivery (filters); 0 for messages not stored yet (route, tx-check)."""
        return self._fixed()[3]

    def _text(self, field: int) -> str:
        lo, hi = self._layout()[field]
        return self._raw[lo:hi].decode("utf-8", "replace")

    @property
    def topic(self) -> str:
        return self._text(0)

    @property
    def tag(self) -> Optional[str]:
        """The tag, or None when the message has none."""
        lo, hi = self._layout()[1]
        return self._raw[lo:hi].decode("utf-8", "replace") if hi > lo else None

    @property
    def keys(self) -> list[str]:
        return [k for k in self._text(2).split(" ") if k]

    @property
    def properties(self) -> dict[str, str]:
        """User properties and the broker's own (such as UNIQ_KEY), by name."""
        if self._props is None:
            lo, hi = self._layout()[3]
            props = {}
            for item in self._raw[lo:hi].split(b"\x02"):
                name, sep, value = item.partition(b"\x01")
                if sep:
                    props[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
            self._props = props
        return self._props

    @property
    def body(self) -> Optional[bytes]:
        """The body; fetched from the broker on first use when the batch left it out (filters)."""
        if not self.flags & FLAG_BODY_OMITTED:
            lo, hi = self._layout()[4]
            return self._raw[lo:hi]
        if self._fetch is None:
            return None
        return self._fetch(self.index)

    def text(self) -> Optional[str]:
        """The body as UTF-8 text (undecodable bytes replaced), or None."""
        body = self.body
        return None if body is None else body.decode("utf-8", "replace")

    # Defined after the @property fields: inside the class body this name hides the builtin.
    def property(self, name: str) -> Optional[str]:
        """A property by name, or None: found where a property starts, by its whole name, without
        decoding the others."""
        if self._props is not None:
            return self._props.get(name)
        raw = self._raw
        if self._spans is not None:
            lo, hi = self._spans[3]
        else:
            # Only as far as the properties: three short lengths to skip, then theirs.
            try:
                at = self._start + _HEAD_SIZE
                at += 2 + _U16(raw, at)[0]
                at += 2 + _U16(raw, at)[0]
                at += 2 + _U16(raw, at)[0]
                lo = at + 4
                hi = lo + _U32(raw, at)[0]
            except struct.error:
                raise MalformedBatch(f"message {self.index} ends inside its fields") from None
            if hi > self._end:
                raise MalformedBatch(f"message {self.index} has a field longer than the message")
        key = _KEYS.get(name)
        if key is None:
            key = _KEYS[name] = name.encode() + b"\x01"
        at = raw.find(key, lo, hi)
        while at != -1:
            if at == lo or raw[at - 1] == 0x02:
                start = at + len(key)
                stop = raw.find(b"\x02", start, hi)
                return raw[start : hi if stop == -1 else stop].decode("utf-8", "replace")
            at = raw.find(key, at + 1, hi)
        return None

    def __repr__(self) -> str:
        return f"Message(topic={self.topic!r}, tag={self.tag!r}, keys={self.keys!r}, properties={self.properties!r})"


def parse(buf: bytes, fetch: Optional[BodyFetch] = None) -> list[Message]:
    """The messages of a batch, in order. Raises MalformedBatch when the buffer does not follow the
    encoding (a message's own fields are checked when first read)."""
    raw = bytes(buf)
    size = len(raw)
    if size < 4:
        raise MalformedBatch("a batch starts with a 4-byte count")
    (count,) = _U32(raw, 0)
    messages = []
    at = 4
    for index in range(count):
        if at + 4 > size:
            raise MalformedBatch(f"the batch ends before message {index} of {count}")
        (n,) = _U32(raw, at)
        at += 4
        if at + n > size:
            raise MalformedBatch(f"message {index} is longer than the batch")
        messages.append(Message(index, raw, at, at + n, fetch))
        at += n
    return messages
