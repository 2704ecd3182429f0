"""The pane that follows a job's stdout and stderr live, one worker thread each."""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message

from alps.cli.display import printable
from alps.client import STREAMS
from alps.tui.follower import StreamFollower
from alps.tui.job_cells import MAX_COMMAND_CHARS, shorten
from alps.tui.output_view import OutputView
from alps.tui.settings import Settings


class OutputPane(Vertical):
    """A job's output as it comes; hidden until ``open``, Escape closes it.

    Callbacks from the follower threads carry the number of the ``open`` call
    that started them, so that output of a job shown before is never mixed in.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close output")]
    DEFAULT_CSS = """
    OutputPane {
        display: none;
        height: 60%;
        border: round $primary;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
    }
    OutputPane.-open {
        display: block;
    }
    """

    class Closed(Message):
        """The user closed the pane."""

    def __init__(self, settings: Settings, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.settings = settings
        self.job_id: int | None = None
        self._opening = 0
        self._followers: list[StreamFollower] = []
        self._ended: set[str] = set()
        self._problems: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield OutputView(id="output-view")

    @property
    def view(self) -> OutputView:
        return self.query_one(OutputView)

    @property
    def is_open(self) -> bool:
        return self.has_class("-open")

    def open(self, job: dict[str, Any]) -> None:
        """Show the output of ``job`` (a status object) and follow it."""
        self._stop_followers()
        self._opening += 1
        self.job_id = int(job["jobID"])
        self._ended.clear()
        self._problems.clear()
        command = shorten(printable(job.get("job", "")), MAX_COMMAND_CHARS)
        self.border_title = f"Job {self.job_id}: {command}"
        self.view.reset()
        self._show_progress()
        self.add_class("-open")
        self.view.focus()
        for stream in STREAMS:
            follower = StreamFollower(self.settings, self.job_id, stream)
            self._followers.append(follower)
            self.run_worker(
                partial(self._follow, follower, self._opening),
                thread=True,
                group="output",
                name=f"follow {stream} of job {self.job_id}",
            )

    def action_close(self) -> None:
        self.close()
        self.post_message(self.Closed())

    def close(self) -> None:
        """Stop following and hide the pane."""
        self._stop_followers()
        self._opening += 1
        self.job_id = None
        self.remove_class("-open")

    def on_unmount(self) -> None:
        self._stop_followers()

    def _stop_followers(self) -> None:
        for follower in self._followers:
            follower.stop()
        self._followers.clear()

    # On the follower's worker thread -----------------------------------------------

    def _follow(self, follower: StreamFollower, opening: int) -> None:
        stream = follower.stream

        def deliver(method: Any, *args: Any) -> None:
            if not follower.stopped:
                self.app.call_from_thread(method, opening, stream, *args)

        complete = follower.run(
            on_data=partial(deliver, self._receive),
            on_skip=partial(deliver, self._skipped),
            on_problem=partial(deliver, self._problem),
        )
        if complete:
            deliver(self._end)

    # Back on the event loop --------------------------------------------------------

    def _receive(self, opening: int, stream: str, data: bytes) -> None:
        if opening == self._opening:
            self.view.feed(stream, data)

    def _skipped(self, opening: int, stream: str, size: int) -> None:
        if opening == self._opening:
            self.view.skip(stream, size)

    def _problem(self, opening: int, stream: str, message: str | None) -> None:
        if opening != self._opening:
            return
        if message is None:
            self._problems.pop(stream, None)
        else:
            self._problems[stream] = message
        self._show_progress()

    def _end(self, opening: int, stream: str) -> None:
        if opening != self._opening:
            return
        self.view.end(stream)
        self._ended.add(stream)
        if self._ended == set(STREAMS):
            self.view.note("end of output: the job has stopped")
        self._show_progress()

    def _show_progress(self) -> None:
        problems = [f"{stream}: {text}" for stream, text in self._problems.items()]
        if problems:
            self.border_subtitle = "; ".join(problems)
        elif self._ended == set(STREAMS):
            self.border_subtitle = "complete · Esc closes"
        else:
            self.border_subtitle = "following · Esc closes"
