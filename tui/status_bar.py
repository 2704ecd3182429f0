"""The line under the header: the connection's state and a sparkline of running jobs."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Sparkline, Static

from alps.tui.history import BUCKET_SECONDS, BUCKETS


class StatusBar(Horizontal):
    """The connection's state and the number of running jobs over the last minutes."""

    DEFAULT_CSS = """
    StatusBar {
        height: auto;
        padding: 0 1;
        background: $panel;
    }
    StatusBar #connection {
        width: 1fr;
        height: auto;
    }
    StatusBar #connection.-problem {
        color: $text-error;
        text-style: bold;
    }
    StatusBar #running-count {
        width: auto;
        padding: 0 1;
    }
    StatusBar #running-history {
        width: 30;
    }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="connection")
        yield Static("", id="running-count")
        yield Sparkline([], id="running-history")

    @property
    def connection_text(self) -> str:
        return str(self.query_one("#connection", Static).content)

    def show_state(self, text: str, problem: bool = False) -> None:
        """Show the connection's state; a problem is shown in the error style."""
        connection = self.query_one("#connection", Static)
        connection.update(text)
        connection.set_class(problem, "-problem")

    def show_running(self, running: int, peak: int, history: list[float]) -> None:
        """Show the running count now, its peak, and its history as a sparkline.

        Textual's sparkline scales from the lowest to the highest value shown,
        so the peak is written out to give the bars a scale.
        """
        minutes = BUCKET_SECONDS * BUCKETS / 60
        self.query_one("#running-count", Static).update(
            f"running: {running}, peak {peak} in {minutes:g} min"
        )
        self.query_one("#running-history", Sparkline).data = history
