"""The approximate-time synchronizer follows message_filters' policy (real messages)."""

import random

import pytest

from persistence_ros.msg import Detection2DArray
from persistence_ros.ros.conversions import ns_to_stamp
from persistence_ros.ros.sync import ApproximateTimeSynchronizer, stamp_ns_of

MS = 1_000_000


def msg(stamp_ms: float, frame_id: str = '') -> Detection2DArray:
    out = Detection2DArray()
    out.header.stamp = ns_to_stamp(int(round(stamp_ms * MS)))
    out.header.frame_id = frame_id
    return out


def make(n=2, queue_size=10, slop=0.010):
    sync = ApproximateTimeSynchronizer(n, queue_size, slop)
    sets = []
    sync.register_callback(lambda *msgs: sets.append(tuple(stamp_ns_of(m) // MS for m in msgs)))
    return sync, sets


def test_matches_within_slop_and_removes_the_set():
    sync, sets = make()
    assert not sync.add(msg(1000), 0)
    assert sync.add(msg(1005), 1)
    assert sets == [(1000, 1005)]
    assert sync.pending() == [0, 0]
    assert sync.emitted == 1 and sync.received == [1, 1]


def test_rejects_outside_slop_and_spread_equal_to_slop():
    sync, sets = make()
    sync.add(msg(1000), 0)
    sync.add(msg(1020), 1)   # 20 ms apart: outside the 10 ms slop
    sync.add(msg(1030), 0)   # 10 ms from 1020: spread == slop is not < slop (message_filters)
    assert sets == []
    assert sync.pending() == [2, 1]
    sync.add(msg(1029), 1)
    assert sets == [(1030, 1029)]


def test_queue_overflow_drops_the_oldest_stamp():
    sync, sets = make(queue_size=2)
    for stamp in (1000, 2000, 3000):
        sync.add(msg(stamp), 0)
    assert sync.pending() == [2, 0] and sync.dropped == [1, 0]
    sync.add(msg(1000), 1)   # its partner was dropped
    assert sets == []
    sync.add(msg(3001), 1)
    assert sets == [(3000, 3001)]
    # The right queue now holds 1000 only; a newer message pushes nothing out yet.
    assert sync.pending() == [1, 1]


def test_out_of_order_arrivals_and_closest_candidate_first():
    sync, sets = make()
    sync.add(msg(2000), 0)
    sync.add(msg(1000), 0)        # arrives late
    sync.add(msg(1001), 1)
    assert sets == [(1000, 1001)]
    sync.add(msg(2000), 1)
    assert sets[-1] == (2000, 2000)
    # Closest wins: right 2996 and 3003 wait, left 3002 pairs with 3003 (1 ms) not 2996 (6 ms).
    sync.add(msg(2996), 1)
    sync.add(msg(3003), 1)
    sync.add(msg(3002), 0)
    assert sets[-1] == (3002, 3003)
    assert sync.pending() == [0, 1]


def test_three_inputs_need_a_common_spread():
    sync, sets = make(n=3)
    sync.add(msg(1000), 0)
    sync.add(msg(1008), 1)
    sync.add(msg(1016), 2)   # within slop of input 1 but spread 16 ms
    assert sets == []
    sync.add(msg(1004), 2)
    assert sets == [(1000, 1008, 1004)]


def test_same_stamp_replaces_and_counts():
    sync, sets = make()
    sync.add(msg(1000, 'first'), 0)
    sync.add(msg(1000, 'second'), 0)
    assert sync.dropped == [1, 0]
    got = []
    sync.register_callback(lambda a, b: got.append(a.header.frame_id))
    sync.add(msg(1000), 1)
    assert got == ['second']


def test_invalid_arguments():
    with pytest.raises(ValueError, match='slop'):
        ApproximateTimeSynchronizer(2, 10, 0.0)
    with pytest.raises(ValueError, match='queue_size'):
        ApproximateTimeSynchronizer(2, 0, 0.1)


def test_same_sets_as_message_filters_on_random_streams():
    message_filters = pytest.importorskip('message_filters')
    rng = random.Random(3)
    for _ in range(20):
        inputs = [message_filters.SimpleFilter() for _ in range(3)]
        real = message_filters.ApproximateTimeSynchronizer(inputs, 5, 0.02)
        real_sets = []
        real.registerCallback(lambda *m: real_sets.append(tuple(stamp_ns_of(x) for x in m)))
        ours, our_sets = make(n=3, queue_size=5, slop=0.02)
        for _ in range(60):
            i = rng.randrange(3)
            m = msg(rng.randrange(0, 2000, 7) / 1.0)
            inputs[i].signalMessage(m)
            ours.add(m, i)
        assert [tuple(s // MS for s in x) for x in real_sets] == our_sets


def test_a_message_over_its_byte_limit_is_refused_unread(context):
    """An input with max_bytes is subscribed raw; a longer message never reaches the queues."""
    import rclpy
    from rclpy.serialization import serialize_message

    from persistence_ros.msg import Detection2D
    from persistence_ros.ros.sync import SynchronizedSubscriptions

    node = rclpy.create_node('sync_bytes', context=context)
    refused, sets, received = [], [], []
    qos = rclpy.qos.QoSProfile(depth=10)
    subs = SynchronizedSubscriptions(
        node, [(Detection2DArray, 'a', qos), (Detection2DArray, 'b', qos)], 10, 0.010,
        lambda *msgs: sets.append(msgs), backend='builtin', max_bytes=[2000, None],
        on_too_large=lambda *args: refused.append(args),
        on_receive=lambda index, m: received.append((index, m is None)))
    try:
        assert [s.raw for s in subs._subscriptions] == [True, False]
        big = msg(100.0)
        big.detections = [Detection2D(id=f'd{i}', score=0.5) for i in range(200)]
        data = serialize_message(big)
        assert len(data) > 2000
        subs.add_serialized(data, 0, Detection2DArray)
        assert refused == [(0, len(data), 2000)] and subs.too_large == [1, 0]
        assert subs.fed == 0 and subs.pending() == 0
        assert received == [(0, True)]   # received all the same (rates, stall watch)
        small = msg(100.0)   # under the limit: deserialized and synchronized as usual
        small.detections = big.detections[:3]
        subs.add_serialized(serialize_message(small), 0, Detection2DArray)
        subs.add(msg(100.0), 1)
        assert len(sets) == 1 and [d.id for d in sets[0][0].detections] == ['d0', 'd1', 'd2']
        with pytest.raises(ValueError, match='one entry per input'):
            SynchronizedSubscriptions(node, [(Detection2DArray, 'c', qos)], 10, 0.01,
                                      lambda *m: None, max_bytes=[1, 2])
    finally:
        subs.destroy()
        node.destroy_node()
