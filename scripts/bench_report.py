#!/usr/bin/env python3
"""Turns the JSON results of scripts/bench.sh into the "End to end" section of docs/benchmarks.md.

Usage: bench_report.py RESULTS_DIR docs/benchmarks.md

The section sits between two marker lines and is replaced whole; the rest of the file is kept.
"""
import datetime
import json
import os
import platform
import sys

BEGIN = "<!-- scripts/bench.sh: begin -->"
END = "<!-- scripts/bench.sh: end -->"


def load(results, name):
    path = os.path.join(results, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def k(x):
    return "—" if x is None else f"{x / 1000:.1f} k"


def ratio(a, b):
    if not a or not b:
        return None
    return a / b


def fmt_ratio(r):
    return "not measured" if r is None else f"{r:.2f}×"


def rate(report):
    return report["send_msg_per_s"] if report and "failed" not in report else None


def machine_rows(results):
    rows = []
    seq = load(results, "disk-seq")
    if seq:
        bw = seq["jobs"][0]["write"]["bw_bytes"]
        rows.append(("1 MiB sequential writes, one `fdatasync` at the end (fio)", f"{bw / 2**20:.0f} MiB/s"))
    for name, label in (("disk-sync-64k", "64 KiB"), ("disk-sync-4k", "4 KiB")):
        r = load(results, name)
        if r:
            w = r["jobs"][0]["write"]
            sync = r["jobs"][0].get("sync", {}).get("lat_ns", {})
            p50 = sync.get("percentile", {}).get("50.000000")
            extra = f", fdatasync p50 {p50 / 1000:.0f} µs" if p50 else ""
            rows.append((f"{label} writes, `fdatasync` after each (fio)",
                         f"{w['bw_bytes'] / 2**20:.1f} MiB/s = {w['iops']:.0f} syncs/s{extra}"))
    for name, label in (("loopback", "loopback TCP, 128 KiB writes (iperf3)"),
                        ("loopback-1k", "loopback TCP, 1 KiB writes (iperf3)")):
        r = load(results, name)
        if r:
            bps = r["end"]["sum_received"]["bits_per_second"]
            extra = f" = {bps / 8 / 1024 / 1000:.0f} k writes/s" if name.endswith("1k") else ""
            rows.append((label, f"{bps / 1e9:.2f} Gbit/s{extra}"))
    return rows


def lat(l):
    return "—" if not l else f"{l['p50']} / {l['p99']} / {l['p999']}"


RUNS = [
    ("ferrymq-async-produce", "ferrymq", "produce 16 × 32", "async flush"),
    ("ferrymq-async-produce-wide", "ferrymq", "produce 32 × 64", "async flush"),
    ("ferrymq-async-produce64", "ferrymq", "produce 64 × 1", "async flush"),
    ("ferrymq-sync-produce64", "ferrymq", "produce 64 × 1", "sync flush (fdatasync before ack)"),
    ("ferrymq-sync-produce", "ferrymq", "produce 16 × 32", "sync flush"),
    ("ferrymq-async-consume", "ferrymq", "consume 4, drains both", "async flush"),
    ("ferrymq-async-e2e", "ferrymq", "e2e at half peak", "async flush"),
    ("nats-produce", "NATS JetStream", "produce 16 × 32", "file storage, background sync"),
    ("nats-produce-wide", "NATS JetStream", "produce 32 × 64", "file storage, background sync"),
    ("nats-consume", "NATS JetStream", "consume 4, drains both", "file storage"),
    ("nats-e2e", "NATS JetStream", "e2e at half peak", "file storage"),
    ("rabbitmq-produce64", "RabbitMQ quorum", "produce 64 × 1", "fsync before confirm"),
    ("rabbitmq-produce", "RabbitMQ quorum", "produce 16 × 32", "fsync before confirm"),
    ("rabbitmq-consume", "RabbitMQ quorum", "consume 4, drains both", "quorum queue"),
    ("rocketmq-rust-produce", "rocketmq-rust 1.0", "produce 16 × 32", "ASYNC_FLUSH"),
    ("rocketmq-rust-produce-wide", "rocketmq-rust 1.0", "produce 32 × 64", "ASYNC_FLUSH"),
    ("rocketmq-rust-consume", "rocketmq-rust 1.0", "consume 4", "ASYNC_FLUSH"),
]


def section(results):
    today = datetime.date.today().isoformat()
    out = []
    w = out.append
    any_report = next((load(results, n) for n, *_ in RUNS if load(results, n)), None)
    secs = f"{any_report['elapsed_s']:.0f}" if any_report else "?"
    w(f"## End to end (`scripts/bench.sh`), {today}")
    w("")
    w(f"Conditions: release build, {platform.machine()} with {os.cpu_count()} CPUs, kernel {platform.release()}. "
      "Every broker runs on 127.0.0.1 with a fresh data directory, one after another, driven by the same "
      "workload loop (`host/client/src/bench`) on the same machine, so client and broker share the two "
      f"cores. Each run lasts about {secs} s; the first second is left out. Messages are 1 KiB. "
      "`P × B` is P producers, each with one request of B messages in flight. Latency is per message, "
      "from the request's start to its acknowledgement (ack), or from the send to its receipt (e2e), in µs. "
      "`load` is the 1-minute load average just before the run; the run before it counts in it.")
    w("")
    w("### The machine in this run")
    w("")
    w("| limit | result |")
    w("|---|---|")
    for label, value in machine_rows(results):
        w(f"| {label} | {value} |")
    w("")
    w("### Runs")
    w("")
    w("| target | workload | durability | sent msg/s | MB/s | ack p50 / p99 / p99.9 | received msg/s | e2e p50 / p99 / p99.9 | errors | load |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    failures = []
    for name, target, workload, durability in RUNS:
        r = load(results, name)
        if not r:
            continue
        if "failed" in r:
            failures.append((target, workload, r["failed"]))
            continue
        sent = k(r["send_msg_per_s"]) if r["producers"] else "—"
        mb = f"{r['send_mb_per_s']:.0f}" if r["producers"] else "—"
        recv = k(r["receive_msg_per_s"]) if r["consumers"] else "—"
        w(f"| {target} | {workload} | {durability} | {sent} | {mb} | {lat(r.get('send_latency_us'))} | {recv} | "
          f"{lat(r.get('e2e_latency_us'))} | {r['errors']} | {r.get('load_before', '?')} |")
    for target, workload, error in failures:
        w("")
        w(f"{target}, {workload}: the run failed: `{error}`")
    w("")
    w("### The budget")
    w("")
    def peak(prefix):
        runs = [r for r in (load(results, prefix), load(results, prefix + "-wide")) if r]
        return max(runs, key=lambda r: r["send_msg_per_s"]) if runs else None

    fa = peak("ferrymq-async-produce")
    fa64 = load(results, "ferrymq-async-produce64")
    fs64 = load(results, "ferrymq-sync-produce64")
    nats = peak("nats-produce")
    rabbit64 = load(results, "rabbitmq-produce64")
    rmq = peak("rocketmq-rust-produce")
    e2e = load(results, "ferrymq-async-e2e")
    rows = []

    def check(label, figure, holds):
        rows.append((label, figure, "—" if holds is None else ("holds" if holds else "**misses**")))

    check("async produce ≥ 100 k msg/s (best shape)", k(rate(fa)), rate(fa) and rate(fa) >= 100_000)
    r = ratio(rate(fa), rate(nats))
    check("async produce ≥ 1.5× NATS JetStream (file), best shape of each", fmt_ratio(r), None if r is None else r >= 1.5)
    r = ratio(rate(fa), rate(rmq))
    check("async produce ≥ 2× rocketmq-rust, best shape of each", fmt_ratio(r), None if r is None else r >= 2)
    fc, nc = load(results, "ferrymq-async-consume"), load(results, "nats-consume")
    r = ratio(fc and fc["receive_msg_per_s"], nc and nc["receive_msg_per_s"])
    check("consume against NATS JetStream (no budget)", fmt_ratio(r), None)
    r = ratio(rate(fs64), rate(fa64))
    check("sync, 64 producers ≥ 50% of async (same 64 × 1 workload)", "—" if r is None else f"{r * 100:.0f}%",
          None if r is None else r >= 0.5)
    r2 = ratio(rate(fs64), rate(fa))
    check("sync, 64 producers, against the async peak (16 × 32)", "—" if r2 is None else f"{r2 * 100:.0f}%", None)
    r = ratio(rate(fs64), rate(rabbit64))
    check("sync, 64 producers ≥ 1.5× RabbitMQ quorum queues", fmt_ratio(r), None if r is None else r >= 1.5)
    p99 = e2e and e2e.get("e2e_latency_us") and e2e["e2e_latency_us"]["p99"]
    check(f"e2e p99 < 2 ms at half the peak rate ({k(e2e['rate']) if e2e else '—'} msg/s)",
          "—" if not p99 else f"{p99 / 1000:.2f} ms", None if not p99 else p99 < 2000)
    lag = e2e and e2e.get("lag")
    check("consumers keep up at that rate (lag does not grow)",
          "—" if not lag else f"lag {lag['first_third_mean']:.0f} → {lag['last_third_mean']:.0f} messages",
          None if not lag else lag["keeps_up"])
    w("| budget | this run | |")
    w("|---|---|---|")
    for label, figure, verdict in rows:
        w(f"| {label} | {figure} | {verdict} |")
    w("")
    seq = load(results, "disk-seq")
    if fa and seq:
        disk = seq["jobs"][0]["write"]["bw_bytes"]
        w(f"Against the machine: async produce moves {fa['send_mb_per_s']:.0f} MB/s of bodies, "
          f"{fa['send_mb_per_s'] * 1e6 / disk * 100:.0f}% of the disk's sequential write rate in this run.")
    s4 = load(results, "disk-sync-4k")
    if fs64 and s4:
        iops = s4["jobs"][0]["write"]["iops"]
        w(f"Sync flush acknowledges {k(rate(fs64))} durable msg/s with 64 producers of one message each, "
          f"{rate(fs64) / iops:.2f}× the {iops:.0f} `fdatasync`s/s the disk allows one 4 KiB write at a time; "
          "with 16 producers of 32, sync flush runs at the figure in the table above.")
    return "\n".join(out).rstrip() + "\n"


def main():
    results, doc = sys.argv[1], sys.argv[2]
    text = open(doc).read()
    body = section(results)
    block = f"{BEGIN}\n{body}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(doc, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
