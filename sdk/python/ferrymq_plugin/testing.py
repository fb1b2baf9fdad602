"""Run a policy function on sample messages in plain Python, as the broker would call it.

A sample message is a dict in the shape of a `messages.jsonl` line:

    {"topic": "t", "tag": "A", "keys": ["k1"], "properties": {"enterpriseId": "E1"}, "body": "text"}

(`"body_base64"` for a binary body; every field is optional but the topic). The helpers encode the
samples exactly as the broker does (docs/plugins.md, "The batch encoding") and run the SDK's own glue,
so a unit test exercises what the component runs.
"""

from __future__ import annotations

import base64
import struct
from typing import Iterable, Mapping, Optional

from . import Config, Resolution, RouteDecision, run_filter, run_route, run_tx_check
from .batch import FLAG_BODY_OMITTED

Sample = Mapping[str, object]


def body_of(sample: Sample) -> bytes:
    """The body a sample describes (`body` as UTF-8 text, or `body_base64`)."""
    if "body_base64" in sample:
        return base64.b64decode(str(sample["body_base64"]), validate=True)
    body = sample.get("body", "")
    return body if isinstance(body, bytes) else str(body).encode()


def _str(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 0xFFFF:
        raise ValueError(f"a topic, tag or keys field is at most 65535 bytes, not {len(raw)}")
    return struct.pack("<H", len(raw)) + raw


def _bytes(raw: bytes) -> bytes:
    return struct.pack("<I", len(raw)) + raw


def encode_message(sample: Sample, omit_body: bool = False, attempt: int = 1, store_ms: int = 0) -> bytes:
    """One message in the batch encoding, length prefix included."""
    if not sample.get("topic"):
        raise ValueError(f"a sample message needs a topic: {dict(sample)!r}")
    props = sample.get("properties") or {}
    if not isinstance(props, Mapping):
        raise ValueError(f"properties must be an object of name to value: {props!r}")
    encoded_props = b"".join(f"{name}\x01{value}\x02".encode() for name, value in props.items())
    keys = sample.get("keys") or []
    if isinstance(keys, str):
        keys = [keys]
    fields = (
        struct.pack("<Iqq I", FLAG_BODY_OMITTED if omit_body else 0, int(str(sample.get("born_ms", 0))), store_ms, attempt)
        + _str(str(sample["topic"]))
        + _str(str(sample.get("tag") or ""))
        + _str(" ".join(str(k) for k in keys))
        + _bytes(encoded_props)
        + _bytes(b"" if omit_body else body_of(sample))
    )
    return struct.pack("<I", len(fields)) + fields


def encode_batch(samples: Iterable[Sample], omit_bodies: bool = False, attempt: int = 1) -> bytes:
    """A batch of the samples; with `omit_bodies` the bodies are left out, as a filter gets them."""
    samples = list(samples)
    out = struct.pack("<I", len(samples))
    for sample in samples:
        out += encode_message(sample, omit_body=omit_bodies, attempt=attempt)
    return out


class Logs(list):
    """The (level, message) lines a policy wrote during a helper's run."""


def _capturing(run):
    import ferrymq_plugin as sdk

    logs = Logs()
    saved = sdk._sink
    sdk._sink = lambda level, message: logs.append((level, message))
    try:
        return run(), logs
    finally:
        sdk._sink = saved


def filter_decisions(keep, samples: Iterable[Sample], params: Optional[Mapping[str, str]] = None) -> list[bool]:
    """Runs a filter over the samples as one batch (bodies left out and fetched on demand, as the
    broker does) and returns True for each message it delivers."""
    return filter_run(keep, samples, params)[0]


def filter_run(keep, samples: Iterable[Sample], params=None) -> tuple[list[bool], Logs]:
    """`filter_decisions` and the lines the filter logged."""
    samples = list(samples)
    batch = encode_batch(samples, omit_bodies=True)

    def fetch(index: int) -> Optional[bytes]:
        return body_of(samples[index]) if 0 <= index < len(samples) else None

    bits, logs = _capturing(lambda: run_filter(keep, batch, Config((params or {}).items()), fetch))
    return [bool(bits[i >> 3] & (1 << (i & 7))) for i in range(len(samples))], logs


def route_decision(decide, sample: Sample, params: Optional[Mapping[str, str]] = None) -> RouteDecision:
    """Runs a route on one sample message (body included, attempt 0, as the broker does)."""
    message = encode_batch([sample], attempt=0)
    return _capturing(lambda: run_route(decide, message, Config((params or {}).items())))[0]


def tx_resolution(check, transaction_id: str, sample: Sample, params=None) -> Resolution:
    """Runs a tx-check on one sample message."""
    message = encode_batch([sample], attempt=0)
    return _capturing(lambda: run_tx_check(check, transaction_id, message, Config((params or {}).items())))[0]
