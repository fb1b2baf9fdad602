"""Unit tests of the policy in plain Python:
PYTHONPATH=.ferrymq/python python3 -m unittest (after `ferrymq plugin build`, which writes the SDK)."""

import json
import unittest

import ferrymq_plugin as fp
from ferrymq_plugin import testing

from policy import check

with open("messages.jsonl", encoding="utf-8") as f:
    SAMPLES = [json.loads(line) for line in f if line.strip()]


class Policy(unittest.TestCase):
    def test_each_sample_gets_its_resolution(self):
        got = [testing.tx_resolution(check, s["transaction_id"], s) for s in SAMPLES]
        R = fp.Resolution
        self.assertEqual(got, [R.COMMIT, R.ROLLBACK, R.UNKNOWN])


if __name__ == "__main__":
    unittest.main()
