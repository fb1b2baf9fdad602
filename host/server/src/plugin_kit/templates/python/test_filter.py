"""Unit tests of the policy in plain Python:
PYTHONPATH=.ferrymq/python python3 -m unittest (after `ferrymq plugin build`, which writes the SDK)."""

import json
import unittest

from ferrymq_plugin import testing

from policy import keep

with open("messages.jsonl", encoding="utf-8") as f:
    SAMPLES = [json.loads(line) for line in f if line.strip()]


class Policy(unittest.TestCase):
    def test_only_the_listed_enterprises_messages_are_delivered(self):
        got = testing.filter_decisions(keep, SAMPLES, {"enterprise_ids": "E1, E3"})
        self.assertEqual(got, [True, False, True, False])

    def test_no_listed_enterprise_delivers_nothing(self):
        self.assertEqual(testing.filter_decisions(keep, SAMPLES), [False] * len(SAMPLES))


if __name__ == "__main__":
    unittest.main()
