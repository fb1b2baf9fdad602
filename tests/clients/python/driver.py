"""Drives the official RocketMQ Python client (rocketmq-python-client) for ferrymq's tests.

See ../README.md for the command line and the JSON events printed on stdout.
"""

import argparse
import os
import json
import sys
import threading
import time

from rocketmq import (ClientConfiguration, ConsumeResult, Credentials, FilterExpression, Message,
                      MessageListener, Producer, PushConsumer, SimpleConsumer, TransactionChecker)
from rocketmq.grpc_protocol import FilterType, TransactionResolution


EMIT_LOCK = threading.Lock()


def emit(**event):
    # One write per event under a lock: push listeners run on many threads, and print() writes the text
    # and the newline separately, so lines could interleave.
    line = json.dumps(event) + "\n"
    with EMIT_LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()


def now_ms():
    return int(time.time() * 1000)


def filter_of(args):
    kind = FilterType.SQL if args.filter_type == "sql" else FilterType.TAG
    return FilterExpression(args.expr, kind)


def describe(msg):
    return {
        "id": msg.message_id,
        "topic": msg.topic,
        "body": msg.body.decode("utf-8", "replace"),
        "tag": msg.tag,
        "keys": sorted(msg.keys or []),
        "properties": dict(msg.properties or {}),
        "attempt": msg.delivery_attempt,
        "message_group": msg.message_group,
        "delivery_ms": msg.delivery_timestamp,
        "received_ms": now_ms(),
    }


def build(args, i):
    msg = Message()
    msg.topic = args.topic
    body = f"{args.prefix}{i}"
    if args.body_bytes:
        body = body.ljust(args.body_bytes, "x")
    msg.body = body.encode()
    if args.tag:
        msg.tag = args.tag
    # The client's `keys` setter adds one key per assignment.
    for key in (args.keys.split(",") if args.keys else []):
        msg.keys = key
    if args.message_group:
        msg.message_group = args.message_group
    if args.delay_ms is not None:
        # This client takes the delivery time in whole seconds; round up so the delay is not shortened.
        msg.delivery_timestamp = (now_ms() + args.delay_ms + 999) // 1000
    for prop in args.property:
        key, _, value = prop.partition("=")
        msg.add_property(key, value)
    return msg


def produce(args, config):
    producer = Producer(config, (args.topic,))
    producer.startup()
    sent = 0
    try:
        for i in range(args.count):
            try:
                receipt = producer.send(build(args, i))
                emit(event="sent", index=i, id=receipt.message_id)
                sent += 1
            except Exception as e:  # refusals by the client and by the broker alike
                emit(event="error", index=i, error=f"{type(e).__name__}: {e}")
    finally:
        producer.shutdown()
    return sent


def simple(args, config):
    consumer = SimpleConsumer(config, args.group, {args.topic: filter_of(args)}, await_duration=args.await_s)
    consumer.startup()
    count = 0
    deadline = time.time() + args.timeout_s
    last = time.time()
    try:
        while count < args.expect and time.time() < deadline:
            if args.idle_s and count > 0 and time.time() - last > args.idle_s:
                break
            for msg in consumer.receive(args.batch, args.invisible_s):
                last = time.time()
                emit(event="received", **describe(msg))
                count += 1
                if not args.no_ack:
                    consumer.ack(msg)
                    emit(event="acked", id=msg.message_id)
    finally:
        consumer.shutdown()
    return count


class Listener(MessageListener):
    def __init__(self, fail_times):
        self.fail_times = fail_times
        self.failures = {}
        self.consumed = 0
        self.lock = threading.Lock()

    def consume(self, message):
        emit(event="received", **describe(message))
        with self.lock:
            failed = self.failures.get(message.message_id, 0)
            if failed < self.fail_times:
                self.failures[message.message_id] = failed + 1
                return ConsumeResult.FAILURE
            self.consumed += 1
        emit(event="consumed", id=message.message_id)
        return ConsumeResult.SUCCESS


def push(args, config):
    listener = Listener(args.fail_times)
    consumer = PushConsumer(config, args.group, listener, {args.topic: filter_of(args)})
    consumer.startup()
    deadline = time.time() + args.timeout_s
    try:
        while listener.consumed < args.expect and time.time() < deadline:
            time.sleep(0.05)
    finally:
        consumer.shutdown()
    return listener.consumed


def index_of(body):
    """The message index at the end of a body `<prefix><i>` (padding aside)."""
    digits = ""
    for ch in reversed(body.rstrip("x")):
        if not ch.isdigit():
            break
        digits = ch + digits
    return int(digits) if digits else -1


def decision(rule, index):
    """commit | rollback | even (even index commits) | unknown | none."""
    if rule == "even":
        return "commit" if index % 2 == 0 else "rollback"
    return rule


class Checker(TransactionChecker):
    def __init__(self, rule):
        self.rule = rule

    def check(self, message):
        body = message.body.decode("utf-8", "replace")
        answer = decision(self.rule, index_of(body))
        emit(event="checked", id=message.message_id, body=body, resolution=answer)
        return {"commit": TransactionResolution.COMMIT,
                "rollback": TransactionResolution.ROLLBACK}.get(answer, TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED)


def tx(args, config):
    producer = Producer(config, (args.topic,), checker=Checker(args.checker))
    producer.startup()
    sent = 0
    try:
        for i in range(args.count):
            try:
                transaction = producer.begin_transaction()
                receipt = producer.send(build(args, i), transaction)
                emit(event="sent", index=i, id=receipt.message_id, transaction_id=receipt.transaction_id)
                sent += 1
            except Exception as e:
                emit(event="error", index=i, error=f"{type(e).__name__}: {e}")
                continue
            what = decision(args.decide, i)
            try:
                if what == "commit":
                    transaction.commit()
                    emit(event="committed", index=i, id=receipt.message_id)
                elif what == "rollback":
                    transaction.rollback()
                    emit(event="rolled_back", index=i, id=receipt.message_id)
                else:
                    emit(event="left", index=i, id=receipt.message_id)
            except Exception as e:
                emit(event="error", index=i, error=f"{type(e).__name__}: {e}")
        time.sleep(args.stay_s)
    finally:
        producer.shutdown()
    return sent


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("endpoint")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--prefix", default="m")
    p.add_argument("--tag")
    p.add_argument("--keys")
    p.add_argument("--message-group")
    p.add_argument("--delay-ms", type=int)
    p.add_argument("--property", action="append", default=[])
    p.add_argument("--body-bytes", type=int)
    t = sub.add_parser("tx")
    t.add_argument("--topic", required=True)
    t.add_argument("--count", type=int, default=1)
    t.add_argument("--prefix", default="m")
    t.add_argument("--decide", choices=("commit", "rollback", "even", "none"), default="commit")
    t.add_argument("--checker", choices=("commit", "rollback", "even", "unknown"), default="even")
    t.add_argument("--stay-s", type=float, default=0)
    for opt in ("--tag", "--keys", "--message-group", "--body-bytes"):
        t.add_argument(opt, type=int if opt == "--body-bytes" else str)
    t.add_argument("--delay-ms", type=int)
    t.add_argument("--property", action="append", default=[])
    for name in ("simple", "push"):
        c = sub.add_parser(name)
        c.add_argument("--group", required=True)
        c.add_argument("--topic", required=True)
        c.add_argument("--filter-type", choices=("tag", "sql"), default="tag")
        c.add_argument("--expr", default="*")
        c.add_argument("--expect", type=int, default=1)
        c.add_argument("--timeout-s", type=float, default=30)
        c.add_argument("--invisible-s", type=int, default=15)
        c.add_argument("--batch", type=int, default=16)
        c.add_argument("--await-s", type=int, default=5)
        c.add_argument("--no-ack", action="store_true")
        c.add_argument("--idle-s", type=float, default=0, help="stop after this long without a message (once one came)")
        c.add_argument("--fail-times", type=int, default=0)
    args = parser.parse_args()
    config = ClientConfiguration(args.endpoint, Credentials())
    try:
        count = {"produce": produce, "simple": simple, "push": push, "tx": tx}[args.command](args, config)
    except Exception as e:
        emit(event="fatal", error=f"{type(e).__name__}: {e}")
        sys.exit(1)
    emit(event="done", count=count)
    # The client's background threads may linger; the run is over.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
