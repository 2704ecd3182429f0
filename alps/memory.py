"""Keep the services' resident memory flat while they move output in large chunks.

glibc serves a large allocation with ``mmap`` and unmaps it on free, but after the
first such free it raises that threshold (up to 32 MiB on 64-bit), so later
chunks of a few MiB come from the heap of whichever thread allocated them and
stay there. With a pool of threads each holding freed chunks, a long output
transfer leaves the process tens of MiB larger. Fixing the threshold stops that.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # from <malloc.h>
MMAP_THRESHOLD = 256 * 1024


def return_large_blocks() -> None:
    """Make every allocation of 256 KiB or more go back to the OS when freed."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc: nothing to tune
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
