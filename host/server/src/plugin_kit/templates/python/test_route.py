"""Unit tests of the policy in plain Python:
PYTHONPATH=.ferrymq/python python3 -m unittest (after `ferrymq plugin build`, which writes the SDK)."""

import json
import unittest

import ferrymq_plugin as fp
from ferrymq_plugin import testing

from policy import decide

with open("messages.jsonl", encoding="utf-8") as f:
    SAMPLES = [json.loads(line) for line in f if line.strip()]


class Policy(unittest.TestCase):
    def test_each_sample_gets_its_decision(self):
        got = [testing.route_decision(decide, sample) for sample in SAMPLES]
        self.assertEqual(
            got,
            [
                fp.Accept(set_properties={"checked": "yes"}),
                fp.Drop("test message"),
                fp.Reject("a message needs an enterpriseId property"),
            ],
        )


if __name__ == "__main__":
    unittest.main()
