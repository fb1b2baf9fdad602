// Unit tests of the policy under Node.js: node --test (after `ferrymq plugin build`, which writes
// the SDK into .ferrymq/js).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { accept, drop, reject } from "./.ferrymq/js/ferrymq-plugin.js";
import { routeDecision } from "./.ferrymq/js/testing.js";
import decide from "./policy.js";

const samples = readFileSync(new URL("./messages.jsonl", import.meta.url), "utf8")
  .split("\n")
  .filter((line) => line.trim())
  .map((line) => JSON.parse(line));

test("each sample gets its decision", () => {
  assert.deepEqual(
    samples.map((s) => routeDecision(decide, s)),
    [accept({ setProperties: { checked: "yes" } }), drop("test message"), reject("a message needs an enterpriseId property")],
  );
});
