"""Fixtures of the ROS tests (the process environment is set up by test/conftest.py)."""

import pytest


@pytest.fixture
def context():
    """Return an rclpy context of the test's own, shut down afterwards."""
    import rclpy
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


@pytest.fixture
def subscription_callbacks():
    """
    Return ``callbacks(node)``: its synchronized subscriptions' real callbacks, in input order.

    Each is fed a message and passes it on as DDS would: serialized where the subscription
    is raw (the detections, ``detections.max_message_bytes``), as the object otherwise.
    """
    from rclpy.serialization import serialize_message

    def callbacks(node):
        return [lambda msg, sub=sub: sub.callback(serialize_message(msg) if sub.raw else msg)
                for sub in node._sync._subscriptions]
    return callbacks
