"""The dashboard application: the job table, the output pane and the key bindings.

Every API call runs on a worker thread with a client of its own, because an
``ApiClient`` is not safe to share between threads and a slow reply must never
freeze the screen. Results come back to the event loop with
``call_from_thread``. A failed call shows its message and never ends the app.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.widgets import DataTable, Footer, Header, Input, Static

from alps.cli.display import printable
from alps.client import ClientError, TransportError
from alps.tui import POLL_INTERVAL
from alps.tui.api import DashboardClient
from alps.tui.confirm import ConfirmScreen
from alps.tui.history import RunningHistory
from alps.tui.identity import certificate_identity
from alps.tui.job_cells import MAX_COMMAND_CHARS, JobFormatter, exit_text, shorten
from alps.tui.jobs_table import JobsTable
from alps.tui.output_pane import OutputPane
from alps.tui.poller import JobPoller, Jobs
from alps.tui.prompt import Prompt
from alps.tui.settings import Settings
from alps.tui.status_bar import StatusBar

Result = TypeVar("Result")


class DashboardApp(App[None]):
    """A live view of ALPS jobs for the identity and server of ``settings``.

    ``clock`` returns the current Unix time and ``formatter`` turns jobs into
    cell text; tests pass fixed ones to get the same screen on every run.
    """

    TITLE = "ALPS"
    CSS = """
    #message {
        height: 1;
        padding: 0 1;
    }
    #message.-error {
        color: $text-error;
        text-style: bold;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "show_output", "Output"),
        Binding("escape", "close_output", "Close output"),
        Binding("n", "new_job", "New job"),
        Binding("s", "stop_job", "Stop"),
        Binding("t", "take_job", "Take"),
        Binding("slash", "filter", "Filter"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        settings: Settings,
        *,
        interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.time,
        formatter: JobFormatter | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.interval = interval
        self.clock = clock
        self.formatter = formatter or JobFormatter()
        self.identity = certificate_identity(settings.cert)
        self.history = RunningHistory()
        self.poller = JobPoller(settings, interval)
        self._select_on_arrival: int | None = None
        # Whether the last poll failed, so a filter change keeps the warning.
        self._failing = False
        # The poller's ``everyone`` when the header was last written.
        self._role_shown: bool | None = None
        self._calls: set[DashboardClient] = set()
        self._calls_lock = threading.Lock()

    def compose(self) -> ComposeResult:
        yield Header()
        yield StatusBar(id="status")
        yield JobsTable(self.formatter, id="jobs")
        yield OutputPane(self.settings, id="output")
        yield Prompt(
            placeholder="Command to run with /bin/sh -c; Enter starts it, "
            "Escape cancels",
            id="command-prompt",
        )
        yield Prompt(
            placeholder="Text to look for in ID, owner, command or state; "
            "Escape clears the filter",
            id="filter-prompt",
        )
        yield Static("", id="message")
        yield Footer()

    @property
    def table(self) -> JobsTable:
        return self.query_one(JobsTable)

    @property
    def status_bar(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def output_pane(self) -> OutputPane:
        return self.query_one(OutputPane)

    @property
    def message(self) -> str:
        """The text of the message line, which reports the last action."""
        return str(self.query_one("#message", Static).content)

    def on_mount(self) -> None:
        self._show_identity()
        self.status_bar.show_state(f"Connecting to {self.settings.address}…")
        self.status_bar.show_running(0, 0, self.history.values(self.clock()))
        self.table.focus()
        self.set_interval(1.0, self._tick)
        self._poll()

    def on_unmount(self) -> None:
        self.poller.stop()
        with self._calls_lock:
            calls = list(self._calls)
        for client in calls:
            client.interrupt()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "close_output":
            return self.output_pane.is_open
        return True

    # Polling -----------------------------------------------------------------------

    @work(thread=True, group="poll", name="poll the job list")
    def _poll(self) -> None:
        self.poller.run(
            on_jobs=lambda jobs: self.call_from_thread(
                self._if_shown, self._show_jobs, jobs
            ),
            on_error=lambda error: self.call_from_thread(
                self._if_shown, self._show_problem, error
            ),
        )

    def _if_shown(self, show: Callable[[Any], None], value: Any) -> None:
        """Call ``show`` unless the screen is already gone.

        A poll that was under way when the app began to exit still reports
        back, and by then the widgets it would update have been removed.
        """
        try:
            self.query_one(JobsTable)
        except NoMatches:
            return
        show(value)

    def _show_jobs(self, jobs: Jobs) -> None:
        now = self.clock()
        self.table.show_jobs(jobs, now)
        running = sum(job.get("jobStatus") == "running" for job in jobs)
        self.history.record(running, now)
        self.status_bar.show_running(
            running, self.history.peak(), self.history.values(now)
        )
        self.status_bar.show_state(self._summary(len(jobs), running))
        self._failing = False
        if self._role_shown != self.poller.everyone:
            self._show_identity()
        if self._select_on_arrival is not None and self.table.select_job(
            self._select_on_arrival
        ):
            self._select_on_arrival = None

    def _summary(self, total: int, running: int) -> str:
        jobs = "job" if total == 1 else "jobs"
        text = f"Connected · {total} {jobs}, {running} running"
        query = self.table.query_text
        if query:
            shown = len(self.table.visible_ids())
            text += f" · filter {query!r}: {shown} shown"
        return text

    def _show_problem(self, error: ClientError) -> None:
        every = f"every {self.interval:g} s"
        if isinstance(error, TransportError):
            text = f"API unreachable, retrying {every}: {error.message}"
        else:
            text = f"Listing jobs failed, retrying {every}: {error.message}"
        self.status_bar.show_state(text, problem=True)
        self._failing = True

    def _show_identity(self) -> None:
        identity = self.identity or "unknown identity"
        self._role_shown = self.poller.everyone
        role = {True: " (admin)", False: " (user)"}.get(self._role_shown, "")
        self.sub_title = f"{identity}{role} at {self.settings.address}"

    def _tick(self) -> None:
        self.table.tick(self.clock())

    # Messages ----------------------------------------------------------------------

    def show_message(self, text: str, error: bool = False) -> None:
        """Report the result of an action on the message line."""
        line = self.query_one("#message", Static)
        line.update(text)
        line.set_class(error, "-error")

    def _selected_job(self) -> dict[str, Any] | None:
        job = self.table.selected_job()
        if job is None:
            self.show_message(
                "No job selected: move to a job with the arrow keys.", True
            )
        return job

    # API calls off the event loop --------------------------------------------------

    @work(thread=True, group="calls")
    def _call(
        self,
        call: Callable[[DashboardClient], Result],
        done: Callable[[Result], None],
        failure: str,
    ) -> None:
        """Run ``call`` with a new client; pass its result to ``done``.

        On a ClientError the message line shows ``failure`` and the error.
        """
        try:
            with self.settings.client() as client:
                with self._calls_lock:
                    self._calls.add(client)
                try:
                    result = call(client)
                finally:
                    with self._calls_lock:
                        self._calls.discard(client)
        except ClientError as error:
            self.call_from_thread(
                self.show_message, f"{failure}: {error.message}", True
            )
            return
        self.call_from_thread(done, result)
        self.poller.wake()

    # Start -------------------------------------------------------------------------

    def action_new_job(self) -> None:
        self.query_one("#command-prompt", Prompt).show()

    @on(Input.Submitted, "#command-prompt")
    def _start_submitted(self, event: Input.Submitted) -> None:
        command = event.value
        if not command.strip():
            self.show_message("The command is empty: type one, such as ls -l.", True)
            return
        event.input.value = ""
        self._close_prompt(event.input)
        self.show_message(f"Starting {shorten(command, MAX_COMMAND_CHARS)}…")
        self._call(
            lambda client: client.start(command),
            self._started,
            "Cannot start the job",
        )

    def _started(self, reply: dict[str, Any]) -> None:
        job_id = reply.get("jobID")
        self.show_message(
            f"Started job {printable(job_id)} for {printable(reply.get('owner'))}."
        )
        if isinstance(job_id, int) and not self.table.select_job(job_id):
            self._select_on_arrival = job_id

    # Stop --------------------------------------------------------------------------

    def action_stop_job(self) -> None:
        job = self._selected_job()
        if job is None:
            return
        job_id = job["jobID"]
        if job.get("jobStatus") == "stopped":
            self.show_message(f"Job {job_id} has stopped already.", True)
            return
        command = shorten(printable(job.get("job", "")), MAX_COMMAND_CHARS)
        question = (
            f"Stop job {job_id}?\n{command}\n\nIts processes get SIGTERM, then "
            "SIGKILL after the server's grace period."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self._stop(job_id)

        self.push_screen(ConfirmScreen(question), answered)

    def _stop(self, job_id: int) -> None:
        self.show_message(f"Stopping job {job_id}…")
        self._call(
            lambda client: client.stop(job_id),
            self._stopped,
            f"Cannot stop job {job_id}",
        )

    def _stopped(self, reply: dict[str, Any]) -> None:
        job_id = printable(reply.get("jobID"))
        self.show_message(f"Stopped job {job_id}: exit code {exit_text(reply)}.")

    # Take --------------------------------------------------------------------------

    def action_take_job(self) -> None:
        job = self._selected_job()
        if job is None:
            return
        job_id = job["jobID"]
        self._call(
            lambda client: client.take(job_id),
            self._taken,
            f"Cannot take job {job_id}",
        )

    def _taken(self, reply: dict[str, Any]) -> None:
        self.show_message(
            f"Took job {printable(reply.get('jobID'))} from "
            f"{printable(reply.get('oldOwner'))}; its owner is now "
            f"{printable(reply.get('owner'))}."
        )

    # Filter ------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.query_one("#filter-prompt", Prompt).show(self.table.query_text)

    @on(Input.Changed, "#filter-prompt")
    def _filter_changed(self, event: Input.Changed) -> None:
        self._apply_filter(event.value)

    @on(Input.Submitted, "#filter-prompt")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self._close_prompt(event.input)

    @on(Prompt.Cancelled, "#filter-prompt")
    def _filter_cancelled(self, event: Prompt.Cancelled) -> None:
        self._apply_filter("")
        self.table.focus()

    @on(Prompt.Cancelled, "#command-prompt")
    def _start_cancelled(self, event: Prompt.Cancelled) -> None:
        self.table.focus()

    def _apply_filter(self, query: str) -> None:
        self.table.filter(query, self.clock())
        if self.poller.everyone is not None and not self._failing:
            jobs = self.table.jobs.values()
            running = sum(job.get("jobStatus") == "running" for job in jobs)
            self.status_bar.show_state(self._summary(len(self.table.jobs), running))

    def _close_prompt(self, prompt: Input) -> None:
        if isinstance(prompt, Prompt):
            prompt.hide()
        self.table.focus()

    # Output ------------------------------------------------------------------------

    def action_show_output(self) -> None:
        job = self._selected_job()
        if job is not None:
            self.output_pane.open(job)

    @on(DataTable.RowSelected, "#jobs")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_show_output()

    def action_close_output(self) -> None:
        self.output_pane.close()
        self.table.focus()

    @on(OutputPane.Closed)
    def _output_closed(self) -> None:
        self.table.focus()
