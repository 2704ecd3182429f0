"""A job's stdout and stderr lines, merged in the order they arrived.

Each stream has its own decoder and current line, because the two come through
separate requests and a line of one must not be cut by bytes of the other.
Finished lines are kept in arrival order. The unfinished line of each stream
comes after them, so a progress bar redrawn with ``\\r`` stays at the bottom.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from alps.client import STREAMS
from alps.tui.line_buffer import LineBuffer

MAX_LINES = 10_000
NOTE = "note"


@dataclass(frozen=True)
class OutputLine:
    """A line of output; ``stream`` is stdout, stderr, or ``note`` for the UI's own."""

    stream: str
    text: str


class Transcript:
    """The lines of a job's output, at most ``max_lines`` of them, newest kept.

    When output is left out, because the follow started after a stream's first
    bytes or because old lines were dropped, a notice line comes first.
    """

    def __init__(self, max_lines: int = MAX_LINES) -> None:
        self.max_lines = max_lines
        self.lines: list[OutputLine] = []
        self.dropped = 0
        self.skipped = dict.fromkeys(STREAMS, 0)
        self._buffers = {stream: LineBuffer() for stream in STREAMS}
        self._decoders = {
            stream: codecs.getincrementaldecoder("utf-8")(errors="replace")
            for stream in STREAMS
        }

    def feed(self, stream: str, data: bytes) -> None:
        """Add bytes of ``stream``; invalid UTF-8 shows as U+FFFD."""
        text = self._decoders[stream].decode(data)
        self._add(stream, self._buffers[stream].feed(text))

    def end(self, stream: str) -> None:
        """Mark the end of ``stream``: its unfinished line becomes a finished one."""
        buffer = self._buffers[stream]
        text = self._decoders[stream].decode(b"", final=True)
        self._add(stream, buffer.feed(text))
        if buffer.current:
            self._add(stream, buffer.feed("\n"))

    def note(self, text: str) -> None:
        """Add a line from the dashboard itself, such as the end of output."""
        self._add(NOTE, [text])

    def skip(self, stream: str, size: int) -> None:
        """Record that the first ``size`` bytes of ``stream`` were not fetched."""
        self.skipped[stream] = size

    def notice(self) -> OutputLine | None:
        """Return the notice line that lists the output not shown, or None."""
        parts = [
            f"the first {size} bytes of {stream}"
            for stream, size in self.skipped.items()
            if size
        ]
        if self.dropped:
            lines = f"{self.dropped} line" + ("" if self.dropped == 1 else "s")
            parts.append(f"then {lines}" if parts else f"the first {lines}")
        if not parts:
            return None
        return OutputLine(NOTE, "Not shown: " + ", ".join(parts) + ".")

    def unfinished(self) -> list[OutputLine]:
        """Return the unfinished lines, which show after the finished ones."""
        return [
            OutputLine(stream, buffer.current)
            for stream, buffer in self._buffers.items()
            if buffer.current
        ]

    def __len__(self) -> int:
        """Return the number of lines shown: notice, finished and unfinished."""
        notice = 0 if self.notice() is None else 1
        return notice + len(self.lines) + len(self.unfinished())

    def line_at(self, index: int) -> OutputLine:
        """Return line ``index`` of the notice, finished and unfinished lines."""
        notice = self.notice()
        if notice is not None:
            if index == 0:
                return notice
            index -= 1
        if index < len(self.lines):
            return self.lines[index]
        return self.unfinished()[index - len(self.lines)]

    def _add(self, stream: str, texts: list[str]) -> None:
        self.lines.extend(OutputLine(stream, text) for text in texts)
        excess = len(self.lines) - self.max_lines
        if excess > 0:
            del self.lines[:excess]
            self.dropped += excess
