"""The live table of jobs: one row per job, changed cell by cell in place.

A new list from the API adds rows for new jobs and removes rows of jobs that
are gone. Rows of known jobs are never rebuilt: ``update_cell`` changes only
the cells whose text changed, so the screen does not flicker and the cursor
stays on its job.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowKey

from alps.tui.job_cells import COLUMNS, JobFormatter, matches

Cell = str | Text


class JobsTable(DataTable[Cell]):
    """The jobs of the latest list, in job ID order, filtered by ``query``."""

    # The same action as DataTable's own Enter binding, shown in the footer.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Output")
    ]
    DEFAULT_CSS = """
    JobsTable {
        height: 1fr;
    }
    """

    def __init__(self, formatter: JobFormatter, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.formatter = formatter
        self.query_text = ""
        self.jobs: dict[int, dict[str, Any]] = {}
        # The cells as last shown, by job ID, to skip updates that change nothing.
        self._shown: dict[int, dict[str, Cell]] = {}

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def show_jobs(self, jobs: list[dict[str, Any]], now: float) -> None:
        """Make the rows match ``jobs``, a list from the API, at Unix time ``now``."""
        self.jobs = {}
        for job in jobs:
            job_id = job.get("jobID")
            if isinstance(job_id, int) and not isinstance(job_id, bool):
                self.jobs[job_id] = job
        self._sync(now)

    def filter(self, query: str, now: float) -> None:
        """Show only the jobs whose ID, owner, command or state contain ``query``."""
        self.query_text = query
        self._sync(now)

    def tick(self, now: float) -> None:
        """Bring the Duration cells of running jobs up to Unix time ``now``."""
        for job_id in self._shown:
            job = self.jobs[job_id]
            if job.get("jobStatus") == "running":
                self._set_cell(job_id, "duration", self.formatter.duration(job, now))

    def selected_job(self) -> dict[str, Any] | None:
        """Return the status object of the job under the cursor, if any."""
        job_id = self._selected_id()
        return None if job_id is None else self.jobs.get(job_id)

    def select_job(self, job_id: int) -> bool:
        """Move the cursor to the row of ``job_id``; return False if it is not shown."""
        if job_id not in self._shown:
            return False
        self.move_cursor(row=self.get_row_index(str(job_id)))
        return True

    def visible_ids(self) -> list[int]:
        """Return the IDs of the rows shown, top to bottom."""
        return [int(str(row.key.value)) for row in self.ordered_rows]

    def cell_text(self, job_id: int, column: str) -> str:
        """Return the plain text of a cell, for tests and screen readers."""
        return str(self._shown[job_id][column])

    def _sync(self, now: float) -> None:
        selected = self._selected_id()
        wanted = [
            job_id
            for job_id in sorted(self.jobs)
            if matches(self.jobs[job_id], self.query_text)
        ]
        for job_id in set(self._shown) - set(wanted):
            self.remove_row(str(job_id))
            del self._shown[job_id]
        highest = max(self._shown, default=0)
        out_of_order = False
        for job_id in wanted:
            cells = self.formatter.cells(self.jobs[job_id], now)
            if job_id in self._shown:
                for column, value in cells.items():
                    self._set_cell(job_id, column, value)
                continue
            # add_row appends, so a row for an ID below a shown one needs a sort.
            out_of_order = out_of_order or job_id < highest
            self.add_row(*cells.values(), key=str(job_id))
            self._shown[job_id] = cells
        if out_of_order:
            self.sort("id", key=lambda value: int(str(value)))
        if selected is not None and selected in self._shown:
            self.select_job(selected)

    def _set_cell(self, job_id: int, column: str, value: Cell) -> None:
        if self._shown[job_id].get(column) == value:
            return
        self._shown[job_id][column] = value
        self.update_cell(str(job_id), column, value, update_width=True)

    def _selected_id(self) -> int | None:
        if not self.row_count:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except CellDoesNotExist:
            return None
        return _job_id(row_key)


def _job_id(row_key: RowKey) -> int | None:
    value = row_key.value
    return int(value) if value is not None and value.isdigit() else None
