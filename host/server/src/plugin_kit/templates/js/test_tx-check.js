// Unit tests of the policy under Node.js: node --test (after `ferrymq plugin build`, which writes
// the SDK into .ferrymq/js).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { Resolution } from "./.ferrymq/js/ferrymq-plugin.js";
import { txResolution } from "./.ferrymq/js/testing.js";
import check from "./policy.js";

const samples = readFileSync(new URL("./messages.jsonl", import.meta.url), "utf8")
  .split("\n")
  .filter((line) => line.trim())
  .map((line) => JSON.parse(line));

test("the approval property decides", () => {
  assert.deepEqual(
    samples.map((s) => txResolution(check, s.transaction_id, s)),
    [Resolution.COMMIT, Resolution.ROLLBACK, Resolution.UNKNOWN],
  );
});
