"""A scrolling view of a ``Transcript`` that renders only the lines on screen."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from alps.tui.transcript import NOTE, Transcript


class OutputView(ScrollView, can_focus=True):
    """A job's output; stderr and the dashboard's notes are styled apart.

    The view follows new output while it is scrolled to the end, and stays
    where it is while the user reads further up.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "output-view--stderr",
        "output-view--note",
    }
    DEFAULT_CSS = """
    OutputView {
        background: $surface;
        overflow: auto;
    }
    OutputView > .output-view--stderr {
        color: $text-error;
    }
    OutputView > .output-view--note {
        color: $text-muted;
        text-style: italic;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.transcript = Transcript()
        self._width = 0

    def reset(self) -> None:
        """Clear the view for another job."""
        self.transcript = Transcript()
        self._width = 0
        self.virtual_size = Size(0, 0)
        self.scroll_to(0, 0, animate=False)
        self.refresh()

    def feed(self, stream: str, data: bytes) -> None:
        self._update(lambda: self.transcript.feed(stream, data))

    def end(self, stream: str) -> None:
        self._update(lambda: self.transcript.end(stream))

    def note(self, text: str) -> None:
        self._update(lambda: self.transcript.note(text))

    def skip(self, stream: str, size: int) -> None:
        self._update(lambda: self.transcript.skip(stream, size))

    def line_text(self, index: int) -> str:
        """Return the plain text of line ``index``, for tests and copying."""
        return self.transcript.line_at(index).text

    def _update(self, change: Callable[[], None]) -> None:
        at_end = self.is_vertical_scroll_end
        added_before = self._lines_added()
        change()
        self._measure(self._lines_added() - added_before)
        self.virtual_size = Size(self._width, len(self.transcript))
        if at_end:
            self.scroll_end(animate=False, x_axis=False)
        self.refresh()

    def _lines_added(self) -> int:
        """Return the number of finished lines ever added, dropped ones included."""
        return len(self.transcript.lines) + self.transcript.dropped

    def _measure(self, added: int) -> None:
        """Widen the virtual width to fit the last ``added`` finished lines."""
        transcript = self.transcript
        new_lines = transcript.lines[-added:] if added else []
        notice = transcript.notice()
        if notice is not None:
            new_lines.append(notice)
        for line in new_lines + transcript.unfinished():
            self._width = max(self._width, cell_len(line.text))

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        base = self.rich_style
        if index >= len(self.transcript):
            return Strip.blank(width, base)
        line = self.transcript.line_at(index)
        text = Text(line.text, style=base, no_wrap=True, end="")
        style = self._line_style(line.stream)
        if style is not None:
            text.stylize(style)
        strip = Strip(text.render(self.app.console), cell_len(line.text))
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def _line_style(self, stream: str) -> Style | None:
        if stream == "stderr":
            return self.get_component_rich_style("output-view--stderr")
        if stream == NOTE:
            return self.get_component_rich_style("output-view--note")
        return None
