// Unit tests of the policy under Node.js: node --test (after `ferrymq plugin build`, which writes
// the SDK into .ferrymq/js).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { filterDecisions } from "./.ferrymq/js/testing.js";
import keep from "./policy.js";

const samples = readFileSync(new URL("./messages.jsonl", import.meta.url), "utf8")
  .split("\n")
  .filter((line) => line.trim())
  .map((line) => JSON.parse(line));

test("only the listed enterprises' messages are delivered", () => {
  assert.deepEqual(filterDecisions(keep, samples, { enterprise_ids: "E1, E3" }), [true, false, true, false]);
});

test("no listed enterprise delivers nothing", () => {
  assert.deepEqual(filterDecisions(keep, samples), [false, false, false, false]);
});
