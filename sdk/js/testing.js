// Run a policy function on sample messages under Node.js, as the broker would call it.
//
// A sample is an object in the shape of a messages.jsonl line:
//   {"topic": "t", "tag": "A", "keys": ["k1"], "properties": {"enterpriseId": "E1"}, "body": "text"}
// ("body_base64" for a binary body; every field but the topic is optional). The helpers encode the
// samples exactly as the broker does and run the SDK's own glue, so a test exercises what the
// component runs.

import { Config, runFilter, runRoute, runTxCheck, setLogSink } from "./ferrymq-plugin.js";

const encoder = new TextEncoder();

/** The body a sample describes. */
export function bodyOf(sample) {
  if (sample.body_base64 !== undefined) return new Uint8Array(Buffer.from(sample.body_base64, "base64"));
  const body = sample.body ?? "";
  return body instanceof Uint8Array ? body : encoder.encode(String(body));
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function u16(n) {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, n, true);
  return b;
}

function u32(n) {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

function str(value) {
  const raw = encoder.encode(value);
  if (raw.length > 0xffff) throw new RangeError(`a topic, tag or keys field is at most 65535 bytes, not ${raw.length}`);
  return concat([u16(raw.length), raw]);
}

/** One message in the batch encoding, length prefix included. */
export function encodeMessage(sample, { omitBody = false, attempt = 1 } = {}) {
  if (!sample.topic) throw new Error(`a sample message needs a topic: ${JSON.stringify(sample)}`);
  const head = new Uint8Array(24);
  const view = new DataView(head.buffer);
  view.setUint32(0, omitBody ? 1 : 0, true);
  view.setBigInt64(4, BigInt(sample.born_ms ?? 0), true);
  view.setBigInt64(12, 0n, true);
  view.setUint32(20, attempt, true);
  const keys = typeof sample.keys === "string" ? [sample.keys] : (sample.keys ?? []);
  const props = Object.entries(sample.properties ?? {}).map(([k, v]) => `${k}\x01${v}\x02`).join("");
  const propBytes = encoder.encode(props);
  const body = omitBody ? new Uint8Array(0) : bodyOf(sample);
  const fields = concat([
    head,
    str(String(sample.topic)),
    str(String(sample.tag ?? "")),
    str(keys.join(" ")),
    u32(propBytes.length),
    propBytes,
    u32(body.length),
    body,
  ]);
  return concat([u32(fields.length), fields]);
}

/** A batch of the samples; with omitBodies the bodies are left out, as a filter gets them. */
export function encodeBatch(samples, { omitBodies = false, attempt = 1 } = {}) {
  return concat([u32(samples.length), ...samples.map((s) => encodeMessage(s, { omitBody: omitBodies, attempt }))]);
}

/** Runs `run` with log lines captured; returns [result, logs]. */
export function capturing(run) {
  const logs = [];
  const previous = setLogSink((level, message) => logs.push([level, message]));
  try {
    return [run(), logs];
  } finally {
    setLogSink(previous);
  }
}

/** Runs a filter over the samples as one batch (bodies fetched on demand, as the broker does) and
 * returns true for each message it delivers. */
export function filterDecisions(keep, samples, params = {}) {
  const batch = encodeBatch(samples, { omitBodies: true });
  const fetch = (i) => (i >= 0 && i < samples.length ? bodyOf(samples[i]) : null);
  const bits = runFilter(keep, batch, new Config(Object.entries(params)), fetch);
  return samples.map((_, i) => Boolean(bits[i >> 3] & (1 << (i & 7))));
}

/** Runs a route on one sample (body included, attempt 0, as the broker does). */
export function routeDecision(decide, sample, params = {}) {
  return runRoute(decide, encodeBatch([sample], { attempt: 0 }), new Config(Object.entries(params)));
}

/** Runs a tx-check on one sample. */
export function txResolution(check, transactionId, sample, params = {}) {
  return runTxCheck(check, transactionId, encodeBatch([sample], { attempt: 0 }), new Config(Object.entries(params)));
}
