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
