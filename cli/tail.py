"""Finding where the last N lines of a job's output stream start, for ``--tail``.

Lines are counted as ``tail -n`` counts them: a final line break ends the last
line, and a last line without one still counts as a line. The stream's end is
fetched with a ``Range: bytes=-N`` suffix. When that contains too few line breaks,
earlier windows are read one at a time, each twice the size of the one before
up to ``MAX_WINDOW``, so memory stays bounded however long the lines are.
"""

from __future__ import annotations

from alps.client import ApiClient

# A first guess of the bytes per line, so that one request usually suffices.
BYTES_PER_LINE = 256
MIN_WINDOW = 4096
MAX_WINDOW = 1 << 20


def tail_offset(client: ApiClient, job_id: int, stream: str, lines: int) -> int:
    """Return the offset in ``stream`` where its last ``lines`` lines start."""
    first_window = min(max(lines * BYTES_PER_LINE, MIN_WINDOW), MAX_WINDOW)
    reply = client.open_stream(job_id, stream, last=first_window)
    data = b"".join(reply.chunks)
    start = reply.start
    if lines == 0:
        return start + len(data)
    if data.endswith(b"\n"):
        data = data[:-1]

    needed = lines
    while True:
        index, found = _start_of_last_lines(data, needed)
        if index is not None:
            return start + index
        if start == 0:
            return 0
        needed -= found
        length = min(start, max(len(data) * 2, MIN_WINDOW), MAX_WINDOW)
        start -= length
        data = b"".join(client.read_stream(job_id, stream, start, length))


def _start_of_last_lines(data: bytes, lines: int) -> tuple[int | None, int]:
    """Return where the last ``lines`` lines of ``data`` start, and the breaks seen.

    The index is None when ``data`` contains fewer than ``lines`` line breaks, so
    the lines start in an earlier window.
    """
    end = len(data)
    for found in range(lines):
        index = data.rfind(b"\n", 0, end)
        if index < 0:
            return None, found
        end = index
    return end + 1, lines
