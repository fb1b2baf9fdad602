#!/usr/bin/env python3
"""Creates a topic and a consumer group on a RocketMQ broker over its Remoting port, for scripts/bench.sh.

Usage: bench_rocketmq_admin.py HOST:PORT TOPIC QUEUES GROUP

The peer's gRPC proxy does not create topics, and the peer ships no admin tool we build; the two
admin requests (UPDATE_AND_CREATE_TOPIC 17, UPDATE_AND_CREATE_SUBSCRIPTIONGROUP 200) are small.
Frame: int32 length, int32 (serialize type << 24 | header length), JSON header, body; big-endian.
"""
import json
import socket
import struct
import sys


def call(sock, opaque, code, ext_fields, body=b""):
    header = json.dumps({"code": code, "language": "JAVA", "version": 413, "opaque": opaque, "flag": 0,
                         "remark": None, "extFields": ext_fields, "serializeTypeCurrentRPC": "JSON"}).encode()
    sock.sendall(struct.pack(">II", 4 + len(header) + len(body), len(header)) + header + body)

    def read(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise SystemExit(f"the broker closed the connection during request {code}")
            data += chunk
        return data

    length, = struct.unpack(">I", read(4))
    frame = read(length)
    header_length = struct.unpack(">I", frame[:4])[0] & 0xFFFFFF
    reply = json.loads(frame[4:4 + header_length])
    if reply.get("code") != 0:
        raise SystemExit(f"request {code} failed: code {reply.get('code')}: {reply.get('remark')}")


def main():
    address, topic, queues, group = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        call(sock, 1, 17, {"topic": topic, "defaultTopic": "TBW102", "readQueueNums": queues,
                           "writeQueueNums": queues, "perm": "6", "topicFilterType": "SINGLE_TAG",
                           "topicSysFlag": "0", "order": "false", "attributes": "+message.type=NORMAL"})
        group_config = {"groupName": group, "consumeEnable": True, "consumeFromMinEnable": True,
                        "consumeBroadcastEnable": False, "retryQueueNums": 1, "retryMaxTimes": 16,
                        "brokerId": 0, "whichBrokerWhenConsumeSlowly": 1, "notifyConsumerIdsChangedEnable": True,
                        "groupSysFlag": 0, "consumeTimeoutMinute": 15, "consumeMessageOrderly": False}
        call(sock, 2, 200, {}, json.dumps(group_config).encode())


if __name__ == "__main__":
    main()
