"""
The process's C allocator (glibc malloc): return freed memory, keep large blocks off the heap.

A flood (5000-box messages, 1080p images) allocates large blocks that Python frees but glibc
keeps.  Two levers, both glibc's own calls; no maintained package binds them, and ctypes
needs one line each.  Elsewhere (musl, macOS) every function here is a no-op returning False.
"""

import ctypes
from typing import Optional

# mallopt's parameter number for the mmap threshold (malloc.h: M_MMAP_THRESHOLD)
_M_MMAP_THRESHOLD = -3
#: glibc's upper bound of the mmap threshold on 64-bit (malloc.h: DEFAULT_MMAP_THRESHOLD_MAX)
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


def _libc() -> Optional[ctypes.CDLL]:
    try:
        libc = ctypes.CDLL('libc.so.6')
    except OSError:
        return None
    return libc if hasattr(libc, 'malloc_trim') and hasattr(libc, 'mallopt') else None


_LIBC = _libc()


def malloc_trim() -> bool:
    """Hand the free pages at the top and inside glibc's heaps back to the system."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))


def set_mmap_threshold(size_bytes: int) -> bool:
    """
    Serve every allocation of at least ``size_bytes`` with its own mapping, returned when freed.

    glibc starts at 128 kB and raises the threshold to the largest block freed so far (up to
    32 MiB), so after one 1080p image (6.2 MB) every later block of that size comes from the
    heap, where a flood's blocks stay as free holes between live ones (measured: the node's
    heap kept +36 MB after a flood with the moving threshold, +24 MB with a fixed 4 MiB one;
    docs/benchmarks.md).  Setting it fixes it (glibc then stops moving it); a free chunk
    already in the heap that is large enough is still used first.  0 leaves glibc's
    moving threshold alone.  Returns True if glibc took the value.
    """
    size_bytes = int(size_bytes)
    if not 0 <= size_bytes <= MMAP_THRESHOLD_MAX:
        raise ValueError(f'mmap threshold {size_bytes} bytes: give 0 (glibc decides) or up to '
                         f'{MMAP_THRESHOLD_MAX} bytes')
    if size_bytes == 0 or _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, size_bytes))
