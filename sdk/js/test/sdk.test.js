// The JavaScript SDK under Node.js: decoding, the glue each world runs, and the testing helpers.
// Run: node --test sdk/js/test/

import assert from "node:assert/strict";
import { test } from "node:test";

import * as fp from "../ferrymq-plugin.js";
import * as testing from "../testing.js";

const INBOX = { topic: "inbox", tag: "urgent", keys: ["k1", "k2"], properties: { enterpriseId: "E1" }, body: "héllo" };

test("every field reads back as encoded", () => {
  const [m] = fp.parse(testing.encodeBatch([{ ...INBOX, born_ms: 1_700_000_000_000 }], { attempt: 3 }));
  assert.deepEqual([m.topic, m.tag, m.keys, m.attempt], ["inbox", "urgent", ["k1", "k2"], 3]);
  assert.equal(m.property("enterpriseId"), "E1");
  assert.equal(m.property("enterprise"), null);
  assert.equal(m.text(), "héllo");
  assert.equal(m.bornMs, 1_700_000_000_000);
});

test("no tag reads as null and a binary body as bytes", () => {
  const [m] = fp.parse(testing.encodeBatch([{ topic: "t", body_base64: "AAH/" }]));
  assert.equal(m.tag, null);
  assert.deepEqual([...m.body], [0, 1, 255]);
});

test("a left-out body is fetched only when read", () => {
  const asked = [];
  const batch = fp.parse(testing.encodeBatch([INBOX, INBOX], { omitBodies: true }), (i) => {
    asked.push(i);
    return new Uint8Array([1]);
  });
  assert.deepEqual(asked, []);
  assert.deepEqual([...batch[1].body], [1]);
  assert.deepEqual(asked, [1]);
});

test("a property value holding a name does not match", () => {
  const [m] = fp.parse(testing.encodeBatch([{ topic: "t", properties: { note: "region", regionCode: "N1" } }]));
  assert.equal(m.property("region"), null);
  assert.equal(m.property("regionCode"), "N1");
});

test("damaged batches are refused", () => {
  const good = testing.encodeBatch([INBOX]);
  const twice = good.slice();
  new DataView(twice.buffer).setUint32(0, 2, true);
  for (const damaged of [new Uint8Array(0), new Uint8Array([1, 0]), good.subarray(0, good.length - 1), twice]) {
    assert.throws(() => fp.parse(damaged), fp.MalformedBatch);
  }
});

const keepListed = (m, c) => c.list("enterprise_ids").includes(m.property("enterpriseId"));

test("a filter answers one bit per message, least significant first", () => {
  const samples = Array.from({ length: 11 }, (_, i) => ({ topic: "t", properties: { enterpriseId: `E${i % 3}` } }));
  const got = testing.filterDecisions(keepListed, samples, { enterprise_ids: "E1, E2" });
  assert.deepEqual(got, samples.map((_, i) => i % 3 !== 0));
  const bits = fp.runFilter(keepListed, testing.encodeBatch(samples), new fp.Config([["enterprise_ids", "E0"]]));
  assert.deepEqual([...bits], [0b01001001, 0b00000010]);
});

test("a filter reading bodies gets them from the broker", () => {
  const got = testing.filterDecisions((m) => m.text().includes("keep"), [{ topic: "t", body: "keep me" }, { topic: "t" }]);
  assert.deepEqual(got, [true, false]);
});

test("route and tx-check answers are checked", () => {
  assert.deepEqual(testing.routeDecision(() => fp.accept({ setProperties: { seen: "yes" } }), INBOX), {
    kind: "accept",
    change: { setProperties: { seen: "yes" } },
  });
  assert.throws(() => testing.routeDecision(() => true, INBOX), /accept\(\), redirect\(\), reject\(\) or drop\(\)/);
  const check = (id) => (id.startsWith("ok") ? fp.Resolution.COMMIT : fp.Resolution.ROLLBACK);
  assert.equal(testing.txResolution(check, "ok-1", INBOX), "commit");
  assert.equal(testing.txResolution(check, "no-1", INBOX), "rollback");
  assert.throws(() => testing.txResolution(() => "yes", "x", INBOX), /not yes/);
});

test("a thrown error is logged as one line, then fails the call", () => {
  const [, logs] = testing.capturing(() => {
    const filter = fp.exportFilter(() => {
      throw new RangeError("no such enterprise\nsecond line");
    });
    assert.throws(() => filter(testing.encodeBatch([INBOX])), RangeError);
  });
  assert.equal(logs.length, 1);
  const [level, line] = logs[0];
  assert.equal(level, "error");
  assert.ok(line.startsWith("the policy threw RangeError: no such enterprise second line"), line);
  assert.ok(!line.includes("\n"));
});

test("log levels are checked", () => {
  assert.throws(() => fp.log("fatal", "x"), /not one of/);
});
