"""Keep the services' resident memory flat while they move output in large chunks.

Output moves in chunks of a few MiB, received and freed by many threads. glibc
gives each busy thread a heap of its own (up to eight per CPU), and a heap keeps
what was freed in it for reuse, so a long transfer through a pool of threads
leaves the process tens of MiB larger: the API reached 177 MiB, from 45 MiB,
following 200 MB with a slow reader (tests/test_output.py, 2-CPU VM). Two heaps
in all bound that, and cost little because the threads mostly wait on sockets.

Fixing glibc's mmap threshold instead, so that every large block is unmapped on
free, bounds memory too but made a 256 MiB fetch 40 % slower on that VM: each
chunk then arrives in fresh pages that the kernel must fault in and zero.
"""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8  # from <malloc.h>
ARENAS = 2


def bound_heaps() -> None:
    """Limit glibc to ARENAS heaps for all threads together."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc: nothing to tune
    mallopt(M_ARENA_MAX, ARENAS)
