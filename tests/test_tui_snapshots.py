"""Snapshots of the dashboard's screens, on a server of each test's own.

Times and durations come from a fixed formatter and the sparkline from a fixed
clock, and the server's random port is replaced in the header, so that every
run draws the same screen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from alps.tui.app import DashboardApp
from alps.tui.job_cells import JobFormatter
from alps.tui.settings import load_settings

from helpers import AlpsServer, wait_stopped

SIZE = (110, 28)
SHOWN_ADDRESS = "127.0.0.1:8443"


class FixedFormatter(JobFormatter):
    """Shows the same start time and duration for every job."""

    def started(self, job: dict[str, Any], now: float) -> str:
        return "12:00:00"

    def duration(self, job: dict[str, Any], now: float) -> str:
        return "5s"


def fixed_clock() -> float:
    return 1_800_000_000.0


def dashboard(server: AlpsServer) -> DashboardApp:
    return DashboardApp(
        load_settings(server.cli_config("user")),
        interval=0.2,
        clock=fixed_clock,
        formatter=FixedFormatter(),
    )


def start_job(client: httpx.Client, command: str) -> int:
    reply = client.post("/start", json={"job": command})
    assert reply.status_code == 200, reply.text
    return reply.json()["jobID"]


async def wait_for(pilot: Any, condition: Callable[[], object], failure: str) -> None:
    deadline = time.monotonic() + 10.0
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{failure} within 10 seconds")
        await pilot.pause(0.05)


def hide_port(app: DashboardApp, server: AlpsServer) -> None:
    app.sub_title = app.sub_title.replace(server.address, SHOWN_ADDRESS)


def test_main_screen(make_server: Callable[..., AlpsServer], snap_compare: Any):
    server = make_server()
    with server.client("user") as client:
        start_job(client, "sleep 300")
        for command in ("echo hello", "exit 3", "kill -TERM $$"):
            wait_stopped(client, start_job(client, command))
    app = dashboard(server)

    async def run_before(pilot: Any) -> None:
        await wait_for(pilot, lambda: len(app.table.visible_ids()) == 4, "no jobs")
        hide_port(app, server)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_output_pane(make_server: Callable[..., AlpsServer], snap_compare: Any):
    # The pauses order the lines, because stdout and stderr arrive through
    # separate requests. The first one leaves time to open the pane.
    command = (
        "sleep 1; echo out; sleep 0.5; echo err >&2; sleep 0.5; "
        "printf 'bar 1\\rbar 2\\rbar 3\\n'; echo last"
    )
    server = make_server()
    with server.client("user") as client:
        job_id = start_job(client, command)
    app = dashboard(server)

    async def run_before(pilot: Any) -> None:
        await wait_for(pilot, lambda: job_id in app.table.visible_ids(), "no job")
        await pilot.press("enter")
        view = app.output_pane.view
        await wait_for(
            pilot,
            lambda: (
                len(view.transcript) == 5
                and app.table.jobs[job_id]["jobStatus"] == "stopped"
            ),
            "no end of output",
        )
        hide_port(app, server)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
