r"""One output stream's current line, edited the way a terminal edits it.

Programs that draw progress bars write ``\r`` and then the new state of the
line, so the buffer keeps a cursor: ``\r`` moves it to column 0, later text
overwrites what is there, and ``\n`` ends the line. Backspace, tab stops every 8
columns and the cursor and erase sequences that progress bars use (``ESC [ K``,
``ESC [ C``, ``ESC [ D``, ``ESC [ G``) work too. Every other escape sequence,
such as colours, and every other control character is dropped, so nothing from
a job's output reaches the real terminal as a control code.

NOTE: columns count characters, not terminal cells, so a line with wide (East
Asian) characters that is redrawn in place may not line up as in a terminal.
"""

from __future__ import annotations

import re

MAX_LINE_CHARS = 10_000
TAB_WIDTH = 8
# An escape sequence cut off at the end of a chunk is kept for the next chunk,
# up to this length. A longer one, such as a hyperlink (OSC 8) with a very long
# URL, loses its ESC and the rest shows as text.
MAX_ESCAPE_CHARS = 4096

_TOKEN = re.compile(
    r"""
      (?P<csi> \x1b\[ (?P<params>[0-?]*) [ -/]* (?P<final>[@-~]) )
    | (?P<osc> \x1b\] [^\x07\x1b]* (?:\x07|\x1b\\) )
    | (?P<charset> \x1b[()*+]. )
    | (?P<escape> \x1b[^\[\]()*+] )
    | (?P<control> [\x00-\x1f\x7f-\x9f] )
    | (?P<text> [^\x00-\x1f\x7f-\x9f]+ )
    """,
    re.VERBOSE | re.DOTALL,
)
# The start of an escape sequence that the end of the text cut short.
_UNFINISHED = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[()*+])?\Z", re.DOTALL
)


class LineBuffer:
    r"""A stream's unfinished line and cursor; ``feed`` returns finished lines.

    >>> buffer = LineBuffer()
    >>> buffer.feed("10%\r50%\r")
    []
    >>> buffer.current
    '50%'
    >>> buffer.feed("done\n")
    ['done']
    """

    def __init__(self, max_chars: int = MAX_LINE_CHARS) -> None:
        if max_chars < 1:
            raise ValueError(f"invalid max_chars {max_chars}: must be at least 1")
        self.max_chars = max_chars
        self.current = ""
        self.cursor = 0
        self._unfinished = ""
        self._finished: list[str] = []

    def feed(self, text: str) -> list[str]:
        """Apply ``text`` and return the lines it finished, oldest first.

        A line longer than ``max_chars`` is finished at that length and goes
        on in a new line, as a terminal wraps it.
        """
        text = self._unfinished + text
        cut = _UNFINISHED.search(text)
        self._unfinished = ""
        if cut is not None and len(text) - cut.start() <= MAX_ESCAPE_CHARS:
            self._unfinished = text[cut.start() :]
            text = text[: cut.start()]
        for token in _TOKEN.finditer(text):
            self._apply(token)
        finished, self._finished = self._finished, []
        return finished

    def _apply(self, token: re.Match[str]) -> None:
        kind = token.lastgroup
        if kind == "text":
            self._write(token.group())
        elif kind == "control":
            self._control(token.group())
        elif kind == "csi":
            self._csi(token.group("params"), token.group("final"))

    def _write(self, text: str) -> None:
        while text:
            if self.cursor >= self.max_chars:
                self._finish()
            room = self.max_chars - self.cursor
            piece, text = text[:room], text[room:]
            line = self.current.ljust(self.cursor)
            end = self.cursor + len(piece)
            self.current = line[: self.cursor] + piece + line[end:]
            self.cursor = end

    def _control(self, char: str) -> None:
        if char == "\n":
            self._finish()
        elif char == "\r":
            self.cursor = 0
        elif char == "\b":
            self.cursor = max(0, self.cursor - 1)
        elif char == "\t":
            stop = (self.cursor // TAB_WIDTH + 1) * TAB_WIDTH
            self.cursor = min(stop, self.max_chars)

    def _csi(self, params: str, final: str) -> None:
        number = int(params) if params.isdigit() else 0
        if final == "K":
            self._erase(number)
        elif final == "C":
            self.cursor = min(self.cursor + max(number, 1), self.max_chars)
        elif final == "D":
            self.cursor = max(self.cursor - max(number, 1), 0)
        elif final == "G":
            self.cursor = min(max(number, 1) - 1, self.max_chars)

    def _erase(self, mode: int) -> None:
        """Erase to the line's end (0), from its start (1), or all of it (2)."""
        if mode == 0:
            self.current = self.current[: self.cursor]
        elif mode == 1:
            self.current = " " * (self.cursor + 1) + self.current[self.cursor + 1 :]
        elif mode == 2:
            self.current = ""

    def _finish(self) -> None:
        self._finished.append(self.current)
        self.current = ""
        self.cursor = 0
