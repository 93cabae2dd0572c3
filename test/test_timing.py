"""The per-stage frame timer (no assertion on speed: only on what is recorded)."""

import numpy as np
import pytest

from persistence_ros.timing import NullTimer, StageTimer


def test_laps_add_up_per_frame_and_the_ring_keeps_the_last_frames():
    timer = StageTimer(('a', 'b', 'wait'), window=3, cpu=True)
    for k in range(5):
        timer.start()
        timer.lap('a')
        timer.add('wait', 0.001 * (k + 1))  # measured elsewhere: milliseconds 1..5
        timer.lap('b')
        timer.lap('a')  # a stage may get several laps
        timer.finish()
    assert timer.frames == 5
    wall = timer.samples_ms()
    assert wall.shape == (3, 3) and np.all(wall >= 0.0)
    # oldest first: the frames 3, 4, 5 (waits of 3, 4, 5 ms)
    assert wall[:, 2] == pytest.approx([3.0, 4.0, 5.0])
    assert timer.last()['wait'] == pytest.approx(5.0)
    summary = timer.summary()
    assert set(summary) == {'a', 'b', 'wait', 'total'}
    assert summary['wait']['max'] == pytest.approx(5.0)
    assert summary['total']['max'] == pytest.approx(wall.sum(axis=1).max())
    assert timer.samples_ms('cpu').shape == (3, 3)
    timer.clear()
    assert timer.summary() == {} and timer.last() == {}


def test_a_cancelled_frame_is_not_stored_and_laps_outside_a_frame_do_nothing():
    timer = StageTimer(('x',))
    timer.lap('x')
    timer.start()
    timer.lap('x')
    timer.cancel()
    timer.lap('x')
    assert timer.frames == 0 and timer.summary() == {}
    with pytest.raises(KeyError):
        timer.start()
        timer.lap('unknown')
    with pytest.raises(ValueError, match='distinct'):
        StageTimer(('x', 'x'))


def test_null_timer_records_nothing():
    timer = NullTimer()
    timer.start()
    timer.lap('anything')
    timer.add('anything', 1.0)
    timer.finish()
    assert timer.frames == 0
