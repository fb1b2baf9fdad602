"""Write ferrymq policy plugins in Python.

A plugin is one function in a module, marked with the decorator of its world:

    import ferrymq_plugin as fp

    @fp.filter
    def keep(message: fp.Message, config: fp.Config) -> bool:
        return message.property("enterpriseId") in config.list("enterprise_ids")

`@fp.route` functions take (message, config) and return fp.Accept, fp.Redirect, fp.Reject or fp.Drop;
`@fp.tx_check` functions take (transaction_id, message, config) and return an fp.Resolution.
`ferrymq plugin build` turns the module into a component with componentize-py; `ferrymq_plugin.testing`
runs the function on sample messages in plain Python, for unit tests.

The decorator also defines the module's `WitWorld` class, the entry point componentize-py looks for,
so a module holds exactly one plugin function.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Optional

from .batch import MalformedBatch, Message, parse
from .config import Config
from .decisions import Accept, Drop, Redirect, Reject, Resolution, RouteDecision

__all__ = [
    "Accept",
    "Config",
    "Drop",
    "MalformedBatch",
    "Message",
    "Redirect",
    "Reject",
    "Resolution",
    "RouteDecision",
    "filter",
    "log",
    "route",
    "tx_check",
]

LEVELS = ("trace", "debug", "info", "warn", "error")


def _binding(name: str):
    """A module of the bindings componentize-py generates for the world being built, or None (in
    plain Python, or when the world has no such import). Imported here, when the module is first
    imported, because componentize-py keeps only what was imported while it built the component."""
    try:
        return importlib.import_module(f"wit_world.imports.{name}")
    except ImportError:
        return None


_wit_host = _binding("host")
_wit_batch = _binding("batch")
_wit_types = _binding("types")


def _stderr_sink(level: str, message: str) -> None:
    print(f"[{level}] {message}", file=sys.stderr)


# Where log lines go: the broker inside a component, stderr (or a test's list) outside one.
_sink: Callable[[str, str], None] = _stderr_sink


def log(level: str, message: str) -> None:
    """Writes to the broker's log, attributed to the plugin (the broker rate-limits it).
    `level` is one of trace, debug, info, warn, error."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    _sink(level, message)


def _broker_sink(level: str, message: str) -> None:
    _wit_host.log(_wit_host.Level[level.upper()], message)


_broker_config: Optional[Config] = None


def _config_from_broker() -> Config:
    global _broker_config
    if _broker_config is None:
        _broker_config = Config(_wit_host.config())
    return _broker_config


def _reason(err: BaseException) -> str:
    """One line: what was raised and where in the policy."""
    where = ""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        code = tb.tb_frame.f_code
        where = f" (in {code.co_name}, {code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno})"
    text = str(err).replace("\n", " ")
    return f"{type(err).__name__}: {text}{where}" if text else f"{type(err).__name__}{where}"


def _guarded(call: Callable[[], object]):
    """Runs a policy call; an exception is logged as one line through the broker, then fails the
    call (the broker applies the binding's failure policy)."""
    try:
        return call()
    except BaseException as err:  # noqa: BLE001 - every failure is reported, then re-raised
        _sink("error", f"the policy raised {_reason(err)}")
        raise


def run_filter(keep, messages: bytes, config: Config, fetch=None) -> bytes:
    """Runs `keep` over a filter batch and encodes the bitmap the broker expects."""
    try:
        batch = parse(messages, fetch)
    except MalformedBatch as err:
        _sink("error", f"the broker sent a batch this SDK cannot read: {err}")
        return b""
    bits = bytearray((len(batch) + 7) // 8)
    for message in batch:
        if keep(message, config):
            bits[message.index >> 3] |= 1 << (message.index & 7)
    return bytes(bits)


def _one(message: bytes) -> Message:
    batch = parse(message)
    if len(batch) != 1:
        raise MalformedBatch(f"a route or tx-check call carries one message, not {len(batch)}")
    return batch[0]


def run_route(decide, message: bytes, config: Config) -> RouteDecision:
    """Runs `decide` over the one message of a route call and checks its answer."""
    decision = decide(_one(message), config)
    if not isinstance(decision, (Accept, Redirect, Reject, Drop)):
        raise TypeError(f"a route returns Accept, Redirect, Reject or Drop, not {type(decision).__name__}")
    return decision


def run_tx_check(check, transaction_id: str, message: bytes, config: Config) -> Resolution:
    """Runs `check` over a transaction check and checks its answer."""
    resolution = check(transaction_id, _one(message), config)
    if not isinstance(resolution, Resolution):
        raise TypeError(f"a tx-check returns a Resolution, not {type(resolution).__name__}")
    return resolution


def _to_wit_decision(decision: RouteDecision):
    t = _wit_types
    if isinstance(decision, Accept):
        change = t.Change(
            decision.tag,
            list(decision.set_properties.items()),
            list(decision.remove_properties),
            decision.body,
        )
        return t.RouteDecision_Accept(change)
    if isinstance(decision, Redirect):
        return t.RouteDecision_Redirect(list(decision.topics))
    if isinstance(decision, Reject):
        return t.RouteDecision_Reject(decision.reason)
    return t.RouteDecision_Drop(decision.reason)


def _export(fn, world: type) -> None:
    """Makes `world` the module's WitWorld (componentize-py's entry point)."""
    module = sys.modules.get(fn.__module__)
    if module is None:
        raise RuntimeError(f"cannot find the module of {fn.__qualname__}")
    existing = getattr(module, "WitWorld", None)
    if existing is not None and getattr(existing, "_ferrymq_plugin", None) is not fn:
        raise RuntimeError(f"{module.__name__} already holds a plugin function; a component exports one")
    world._ferrymq_plugin = fn
    module.WitWorld = world


def _use_broker_log() -> None:
    global _sink
    if _sink is _stderr_sink:
        _sink = _broker_sink


def filter(keep):  # noqa: A001 - the world's name
    """Marks `keep(message, config) -> bool` as the component's filter: True delivers the message to
    the consumer group, False withholds it."""

    class WitWorld:
        def filter(self, messages: bytes) -> bytes:
            _use_broker_log()
            return _guarded(lambda: run_filter(keep, messages, _config_from_broker(), _wit_batch.body))

    _export(keep, WitWorld)
    return keep


def route(decide):
    """Marks `decide(message, config) -> Accept | Redirect | Reject | Drop` as the component's
    route: it decides what becomes of each produced message before it is stored."""

    class WitWorld:
        def route(self, message: bytes):
            _use_broker_log()
            return _guarded(lambda: _to_wit_decision(run_route(decide, message, _config_from_broker())))

    _export(decide, WitWorld)
    return decide


def tx_check(check):
    """Marks `check(transaction_id, message, config) -> Resolution` as the component's transaction
    check: it resolves an orphaned transaction before any producer is asked."""

    class WitWorld:
        def check(self, transaction_id: str, message: bytes):
            _use_broker_log()
            resolution = _guarded(lambda: run_tx_check(check, transaction_id, message, _config_from_broker()))
            return _wit_types.Resolution[resolution.name]

    _export(check, WitWorld)
    return check
