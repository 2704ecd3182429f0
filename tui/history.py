"""The number of running jobs over the last minutes, for the status bar's sparkline."""

from __future__ import annotations

from collections import deque

BUCKET_SECONDS = 5.0
BUCKETS = 60  # 5 minutes of 5-second buckets


class RunningHistory:
    """The maximum number of running jobs seen in each time bucket.

    ``values`` always covers the whole window, so that each sparkline column
    stands for the same span of time. Buckets in which no list arrived, before
    the dashboard started or while the API was unreachable, count as zero.
    """

    def __init__(self, bucket_seconds: float = BUCKET_SECONDS, buckets: int = BUCKETS):
        if bucket_seconds <= 0:
            raise ValueError(f"invalid bucket_seconds {bucket_seconds}: must be > 0")
        self.bucket_seconds = bucket_seconds
        self.buckets = buckets
        # (bucket number, maximum running count), oldest first.
        self._counts: deque[tuple[int, int]] = deque()

    def record(self, running: int, now: float) -> None:
        """Count ``running`` jobs at Unix time ``now``."""
        bucket = int(now // self.bucket_seconds)
        if self._counts and self._counts[-1][0] == bucket:
            _, highest = self._counts.pop()
            running = max(running, highest)
        self._counts.append((bucket, running))
        oldest = bucket - self.buckets + 1
        while self._counts[0][0] < oldest:
            self._counts.popleft()

    def values(self, now: float) -> list[float]:
        """Return the count of each bucket of the window up to ``now``, oldest first."""
        last = int(now // self.bucket_seconds)
        counts = dict(self._counts)
        first = last - self.buckets + 1
        return [float(counts.get(bucket, 0)) for bucket in range(first, last + 1)]

    def peak(self) -> int:
        """Return the highest count in the window."""
        return max((count for _, count in self._counts), default=0)
