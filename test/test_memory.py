"""glibc's mmap threshold, fixed by ``memory.set_mmap_threshold``, measured with mallinfo2."""

import ctypes
import os
from pathlib import Path
import subprocess
import sys

import pytest

from persistence_ros import memory


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks',
        'fordblks', 'keepcost')]


def _libc():
    try:
        libc = ctypes.CDLL('libc.so.6')
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        pytest.skip('not glibc >= 2.33 (no mallinfo2)')
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


def _mapped_while_held(libc, size: int) -> int:
    """Return the bytes of mmapped chunks that one live block of ``size`` bytes adds."""
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(size)
    assert block
    try:
        return libc.mallinfo2().hblkhd - before
    finally:
        libc.free(block)


# run in a fresh process: in a long one the heap may already hold a free chunk large enough,
# which glibc uses before it considers a mapping at all
_CHECK = """
import sys
from persistence_ros import memory
import test_memory as t
libc, threshold, mib = t._libc(), int(sys.argv[1]), 1024 * 1024
# glibc's moving threshold is raised by freeing a mapped block: free a 24 MiB one first,
# so that without the fixed threshold the 5 MiB block below would come from the heap
assert t._mapped_while_held(libc, 24 * mib) >= 24 * mib
assert memory.set_mmap_threshold(threshold) is (threshold > 0)
print(t._mapped_while_held(libc, 5 * mib), t._mapped_while_held(libc, 3 * mib))
"""


def _mapped_in_fresh_process(threshold: int):
    """Return the bytes mapped for a 5 MiB and a 3 MiB block after the threshold is set."""
    here = Path(__file__).resolve().parent
    out = subprocess.run([sys.executable, '-c', _CHECK, str(threshold)], capture_output=True,
                         text=True, check=True, cwd=here,
                         env={**os.environ, 'PYTHONPATH': os.pathsep.join(
                             filter(None, [str(here), os.environ.get('PYTHONPATH')]))})
    above, below = out.stdout.split()
    return int(above), int(below)


def test_blocks_from_the_threshold_up_are_mapped_and_smaller_ones_are_not():
    _libc()
    mib = 1024 * 1024
    above, below = _mapped_in_fresh_process(4 * mib)
    assert above >= 5 * mib
    assert below == 0
    # without the call (0: glibc's moving default) the 5 MiB block stays in the heap
    assert _mapped_in_fresh_process(0)[0] == 0


def test_zero_leaves_glibc_alone_and_out_of_range_values_are_refused():
    assert memory.set_mmap_threshold(0) is False
    with pytest.raises(ValueError, match='up to 33554432'):
        memory.set_mmap_threshold(memory.MMAP_THRESHOLD_MAX + 1)
    with pytest.raises(ValueError):
        memory.set_mmap_threshold(-1)
