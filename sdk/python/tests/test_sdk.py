"""The Python SDK in plain CPython: decoding, the glue each world runs, and the testing helpers."""

import struct
import sys
import types
import unittest

import ferrymq_plugin as fp
from ferrymq_plugin import testing
from ferrymq_plugin.batch import MalformedBatch, parse

INBOX = {"topic": "inbox", "tag": "urgent", "keys": ["k1", "k2"], "properties": {"enterpriseId": "E1"}, "body": "hello"}


class Decoding(unittest.TestCase):
    def test_every_field_reads_back_as_encoded(self):
        sample = dict(INBOX, born_ms=1_700_000_000_000)
        [m] = parse(testing.encode_batch([sample], attempt=3))
        self.assertEqual((m.topic, m.tag, m.keys, m.attempt), ("inbox", "urgent", ["k1", "k2"], 3))
        self.assertEqual(m.property("enterpriseId"), "E1")
        self.assertIsNone(m.property("enterprise"))
        self.assertEqual((m.body, m.text(), m.born_ms), (b"hello", "hello", 1_700_000_000_000))

    def test_no_tag_reads_as_none_and_a_binary_body_as_bytes(self):
        [m] = parse(testing.encode_batch([{"topic": "t", "body_base64": "AAH/"}]))
        self.assertIsNone(m.tag)
        self.assertEqual(m.body, b"\x00\x01\xff")
        self.assertEqual(m.keys, [])

    def test_a_left_out_body_is_fetched_only_when_read(self):
        asked = []

        def fetch(index):
            asked.append(index)
            return b"fetched"

        batch = parse(testing.encode_batch([INBOX, INBOX], omit_bodies=True), fetch)
        self.assertEqual(asked, [])
        self.assertEqual(batch[1].body, b"fetched")
        self.assertEqual(asked, [1])

    def test_a_property_value_holding_a_name_does_not_match(self):
        [m] = parse(testing.encode_batch([{"topic": "t", "properties": {"note": "region", "regionCode": "N1"}}]))
        self.assertIsNone(m.property("region"))
        self.assertEqual(m.property("regionCode"), "N1")

    def test_damaged_batches_are_refused_with_a_reason(self):
        good = testing.encode_batch([INBOX])
        for damaged in (b"", b"\x01\x00", good[:-1], struct.pack("<I", 2) + good[4:], good[:4] + b"\xff\xff\x00\x00" + good[8:]):
            with self.assertRaises(MalformedBatch):
                parse(damaged)


def keep_listed(message, config):
    return message.property("enterpriseId") in config.list("enterprise_ids")


class Filter(unittest.TestCase):
    def test_one_bit_per_message_least_significant_first(self):
        samples = [{"topic": "t", "properties": {"enterpriseId": f"E{i % 3}"}} for i in range(11)]
        got = testing.filter_decisions(keep_listed, samples, {"enterprise_ids": "E1, E2"})
        self.assertEqual(got, [i % 3 != 0 for i in range(11)])
        bits = fp.run_filter(keep_listed, testing.encode_batch(samples), fp.Config([("enterprise_ids", "E0")]))
        self.assertEqual(bits, bytes([0b01001001, 0b00000010]))

    def test_a_filter_reading_bodies_gets_them_from_the_broker(self):
        got = testing.filter_decisions(lambda m, c: b"keep" in m.body, [{"topic": "t", "body": "keep me"}, {"topic": "t"}])
        self.assertEqual(got, [True, False])

    def test_a_batch_the_sdk_cannot_read_answers_nothing_and_logs(self):
        def run():
            return fp.run_filter(keep_listed, b"\x05\x00\x00\x00", fp.Config())

        bits, logs = testing._capturing(run)
        self.assertEqual(bits, b"")
        self.assertEqual(logs[0][0], "error")


class RouteAndTxCheck(unittest.TestCase):
    def test_a_route_answer_is_checked(self):
        decision = testing.route_decision(lambda m, c: fp.Accept(set_properties={"seen": "yes"}), INBOX)
        self.assertEqual(decision, fp.Accept(set_properties={"seen": "yes"}))
        with self.assertRaisesRegex(TypeError, "Accept, Redirect, Reject or Drop, not bool"):
            testing.route_decision(lambda m, c: True, INBOX)

    def test_a_tx_check_answer_is_checked(self):
        check = lambda txid, m, c: fp.Resolution.COMMIT if txid.startswith("ok") else fp.Resolution.ROLLBACK  # noqa: E731
        self.assertEqual(testing.tx_resolution(check, "ok-1", INBOX), fp.Resolution.COMMIT)
        self.assertEqual(testing.tx_resolution(check, "no-1", INBOX), fp.Resolution.ROLLBACK)
        with self.assertRaisesRegex(TypeError, "not str"):
            testing.tx_resolution(lambda t, m, c: "commit", "x", INBOX)


class Glue(unittest.TestCase):
    def test_an_exception_is_logged_as_one_line_naming_where(self):
        def boom():
            raise KeyError("enterpriseId\nsecond line")

        with self.assertRaises(KeyError):
            testing._capturing(lambda: fp._guarded(boom))
        logs = []
        saved = fp._sink
        fp._sink = lambda level, line: logs.append((level, line))
        try:
            with self.assertRaises(KeyError):
                fp._guarded(boom)
        finally:
            fp._sink = saved
        [(level, line)] = logs
        self.assertEqual(level, "error")
        self.assertNotIn("\n", line)
        self.assertIn("KeyError", line)
        self.assertIn("in boom, test_sdk.py:", line)

    def test_the_decorator_defines_the_entry_point_once_per_module(self):
        module = types.ModuleType("policy_under_test")
        sys.modules[module.__name__] = module
        try:
            exec("import ferrymq_plugin as fp\n@fp.filter\ndef keep(m, c):\n    return True\n", module.__dict__)
            self.assertTrue(hasattr(module.WitWorld, "filter"))
            with self.assertRaisesRegex(RuntimeError, "already holds a plugin function"):
                exec("@fp.route\ndef other(m, c):\n    return fp.Accept()\n", module.__dict__)
        finally:
            del sys.modules[module.__name__]

    def test_log_levels_are_checked(self):
        with self.assertRaisesRegex(ValueError, "not one of"):
            fp.log("fatal", "x")


if __name__ == "__main__":
    unittest.main()
