"""The dashboard driven by Textual's pilot against a real worker and API."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from textual.widgets.data_table import RowKey

from alps.tui.app import DashboardApp
from alps.tui.confirm import ConfirmScreen
from alps.tui.follower import TAIL_BYTES
from alps.tui.settings import load_settings

from helpers import AlpsServer, Pki, free_port, wait_stopped

SIZE = (120, 36)
INTERVAL = 0.2

Scenario = Callable[[DashboardApp, Any], Awaitable[None]]


def run_dashboard(config: Path, scenario: Scenario) -> None:
    """Run the dashboard with the CLI config ``config`` through ``scenario``."""

    async def main() -> None:
        app = DashboardApp(load_settings(config), interval=INTERVAL)
        async with app.run_test(size=SIZE) as pilot:
            await scenario(app, pilot)

    asyncio.run(main())


async def wait_for(
    pilot: Any, condition: Callable[[], object], failure: str, timeout: float = 10.0
) -> None:
    """Let the app run until ``condition()`` is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{failure} within {timeout} seconds")
        await pilot.pause(0.05)


def start_job(client: httpx.Client, command: str) -> int:
    reply = client.post("/start", json={"job": command})
    assert reply.status_code == 200, reply.text
    return reply.json()["jobID"]


def stop_job(client: httpx.Client, job_id: int) -> None:
    client.post(f"/stop/{job_id}")


def shown(app: DashboardApp, job_id: int) -> bool:
    return job_id in app.table.visible_ids()


def cell(app: DashboardApp, job_id: int, column: str) -> str:
    return app.table.cell_text(job_id, column)


async def select(app: DashboardApp, pilot: Any, job_id: int) -> None:
    await wait_for(pilot, lambda: shown(app, job_id), f"job {job_id} not shown")
    assert app.table.select_job(job_id)
    await pilot.pause()


def colours(view: Any, y: int) -> set[object]:
    """Return the foreground colours on line ``y`` of an output view."""
    return {segment.style.color for segment in view.render_line(y) if segment.style}


def last_line(view: Any) -> str:
    """Return the last finished line of an output view, or "" if none."""
    lines = view.transcript.lines
    return lines[-1].text if lines else ""


@pytest.fixture
def user(alps_server: AlpsServer) -> Any:
    with alps_server.client("user") as client:
        yield client


# The table ---------------------------------------------------------------------------


def test_table_shows_new_job_quickly(alps_server: AlpsServer, user: httpx.Client):
    async def scenario(app: DashboardApp, pilot: Any) -> None:
        await wait_for(pilot, lambda: app.poller.everyone is not None, "no list")
        job_id = start_job(user, "sleep 2")
        # New jobs show within a second; 2 seconds leaves room for a busy CI.
        await wait_for(pilot, lambda: shown(app, job_id), "job not shown", 2.0)
        assert cell(app, job_id, "state") == "running"
        assert cell(app, job_id, "command") == "sleep 2"
        assert cell(app, job_id, "owner") == "user@example.com"

    run_dashboard(alps_server.cli_config("user"), scenario)


def test_table_updates_row_in_place(alps_server: AlpsServer, user: httpx.Client):
    job_id = start_job(user, "sleep 2")

    async def scenario(app: DashboardApp, pilot: Any) -> None:
        await wait_for(pilot, lambda: shown(app, job_id), "job not shown")
        row = app.table.rows[RowKey(str(job_id))]
        first_duration = cell(app, job_id, "duration")
        await wait_for(
            pilot,
            lambda: cell(app, job_id, "duration") != first_duration,
            "duration did not tick",
        )
        await wait_for(
            pilot, lambda: cell(app, job_id, "state") == "stopped", "job not stopped"
        )
        assert cell(app, job_id, "exit") == "0"
        assert app.table.rows[RowKey(str(job_id))] is row

    run_dashboard(alps_server.cli_config("user"), scenario)


def test_header_shows_identity_and_address(alps_server: AlpsServer):
    async def scenario(app: DashboardApp, pilot: Any) -> None:
        await wait_for(pilot, lambda: app.poller.everyone is not None, "no list")
        await pilot.pause()
        expected = f"admin@example.com (admin) at {alps_server.address}"
        assert app.sub_title == expected
        assert "Connected" in app.status_bar.connection_text

    run_dashboard(alps_server.cli_config("admin"), scenario)


def test_user_sees_only_own_jobs(alps_server: AlpsServer, user: httpx.Client):
    with alps_server.client("other") as other:
        others_job = start_job(other, "true")
    own_job = start_job(user, "true")

    async def scenario(app: DashboardApp, pilot: Any) -> None:
        await wait_for(pilot, lambda: shown(app, own_job), "own job not shown")
        assert app.poller.everyone is False
        assert not shown(app, others_job)

    run_dashboard(alps_server.cli_config("user"), scenario)


def test_admin_sees_every_job(alps_server: AlpsServer):
    with alps_server.client("other") as other:
        others_job = start_job(other, "true")

    async def scenario(app: DashboardApp, pilot: Any) -> None:
        await wait_for(pilot, lambda: shown(app, others_job), "other's job not shown")
        assert app.poller.everyone is True
        assert cell(app, others_job, "owner") == "other@example.com"

    run_dashboard(alps_server.cli_config("admin"), scenario)


# Start, stop, take -------------------------------------------------------------------


def test_new_job_key_starts_job(alps_server: AlpsServer, user: httpx.Client):
    command = f"echo started-{uuid.uuid4().hex[:8]}"

    async def scenario(app: DashboardApp, pilot: Any) -> None:
        await pilot.press("n")
        await pilot.press(*command, "enter")
        await wait_for(pilot, lambda: "Started job" in app.message, "no message")
        job_id = int(app.message.split()[2])
        await wait_for(pilot, lambda: shown(app, job_id), "new job not shown")
        assert cell(app, job_id, "command") == command
        assert app.table.selected_job() == app.table.jobs[job_id]
        assert user.get(f"/status/{job_id}").json()["job"] == command

    run_dashboard(alps_server.cli_config("user"), scenario)


def test_new_job_rejects_empty_command(alps_server: AlpsServer):
    async def scenario(app: DashboardApp, pilot: Any) -> None:
        await pilot.press("n", "space", "enter")
        assert "The command is empty" in app.message
        await pilot.press("escape")
        prompt = app.query_one("#command-prompt")
        assert not prompt.display
        assert app.focused is app.table

    run_dashboard(alps_server.cli_config("user"), scenario)


def test_stop_key_asks_before_stopping(alps_server: AlpsServer, user: httpx.Client):
    job_id = start_job(user, "sleep 60")

    async def scenario(app: DashboardApp, pilot: Any) -> None:
        await select(app, pilot, job_id)
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.pause(0.5)
        assert user.get(f"/status/{job_id}").json()["jobStatus"] == "running"

        await pilot.press("s")
        await pilot.press("y")
        await wait_for(
            pilot, lambda: cell(app, job_id, "state") == "stopped", "job not stopped"
        )
        assert cell(app, job_id, "exit") == "143 (SIGTERM)"
        assert app.message == f"Stopped job {job_id}: exit code 143 (SIGTERM)."

    try:
        run_dashboard(alps_server.cli_config("user"), scenario)
    finally:
        stop_job(user, job_id)
    status = user.get(f"/status/{job_id}").json()
    assert status["signal"] == "SIGTERM"


def test_take_key_as_user_is_refused(alps_server: AlpsServer, user: httpx.Client):
    job_id = start_job(user, "sleep 30")

    async def scenario(app: DashboardApp, pilot: Any) -> None:
        await select(app, pilot, job_id)
        await pilot.press("t")
        await wait_for(pilot, lambda: "Cannot take" in app.message, "no refusal")
        assert app.message == (
            f"Cannot take job {job_id}: "
            "you are forbidden to take that job: not an admin"
        )
        assert app.query_one("#message").has_class("-error")
        assert cell(app, job_id, "owner") == "user@example.com"

    try:
        run_dashboard(alps_server.cli_config("user"), scenario)
    finally:
        stop_job(user, job_id)


def test_take_key_as_admin_takes_job(alps_server: AlpsServer, user: httpx.Client):
    job_id = start_job(user, "sleep 30")

    async def scenario(app: DashboardApp, pilot: Any) -> None:
        await select(app, pilot, job_id)
        await pilot.press("t")
        await wait_for(
            pilot,
            lambda: cell(app, job_id, "owner") == "admin@example.com",
            "owner not updated",
        )
        assert app.message == (
            f"Took job {job_id} from user@example.com; "
            "its owner is now admin@example.com."
        )

    try:
        run_dashboard(alps_server.cli_config("admin"), scenario)
        assert user.get(f"/status/{job_id}").status_code == 404
    finally:
        with alps_server.client("admin") as admin:
            stop_job(admin, job_id)


# Filter ------------------------------------------------------------------------------


def test_filter_key_shows_matching_jobs(alps_server: AlpsServer, user: httpx.Client):
    marker = uuid.uuid4().hex[:8]
    alpha = start_job(user, f"echo alpha-{marker}")
    beta = start_job(user, f"echo beta-{marker}")

    async def scenario(app: DashboardApp, pilot: Any) -> None:
        await wait_for(pilot, lambda: shown(app, beta), "jobs not shown")
        await pilot.press("slash", *f"alpha-{marker}")
        assert app.table.visible_ids() == [alpha]

        await pilot.press("enter")
        assert app.focused is app.table
        await pilot.pause(2 * INTERVAL)
        assert app.table.visible_ids() == [alpha]
        assert f"filter 'alpha-{marker}': 1 shown" in app.status_bar.connection_text

        await pilot.press("slash", "escape")
        assert shown(app, alpha)
        assert shown(app, beta)

    run_dashboard(alps_server.cli_config("user"), scenario)


# Output ------------------------------------------------------------------------------


def test_enter_follows_output_live(alps_server: AlpsServer, user: httpx.Client):
    job_id = start_job(user, "echo a; echo problem >&2; sleep 2; echo b")

    async def scenario(app: DashboardApp, pilot: Any) -> None:
        view = app.output_pane.view
        await select(app, pilot, job_id)
        await pilot.press("enter")
        assert app.output_pane.is_open
        assert app.output_pane.job_id == job_id

        def texts() -> list[str]:
            return [view.line_text(index) for index in range(len(view.transcript))]

        await wait_for(pilot, lambda: "a" in texts(), "first line not shown")
        assert "b" not in texts()
        await wait_for(pilot, lambda: "b" in texts(), "second line not shown")
        await wait_for(
            pilot,
            lambda: "end of output: the job has stopped" in texts(),
            "end of output not shown",
        )
        streams = {line.text: line.stream for line in view.transcript.lines}
        assert streams["a"] == "stdout"
        assert streams["problem"] == "stderr"
        assert streams["b"] == "stdout"

        stderr_colour = view.get_component_rich_style("output-view--stderr").color
        assert stderr_colour in colours(view, texts().index("problem"))
        assert stderr_colour not in colours(view, texts().index("a"))

        await pilot.press("escape")
        assert not app.output_pane.is_open
        assert app.focused is app.table

    run_dashboard(alps_server.cli_config("user"), scenario)


def test_output_pane_redraws_progress_line(alps_server: AlpsServer, user: httpx.Client):
    command = r"printf 'step 1\rstep 2\rstep 3'; sleep 1; printf '\rfinished\n'"
    job_id = start_job(user, command)

    async def scenario(app: DashboardApp, pilot: Any) -> None:
        view = app.output_pane.view
        await select(app, pilot, job_id)
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: len(view.transcript) and view.line_text(0) == "step 3",
            "progress line not shown",
        )
        await wait_for(
            pilot, lambda: view.line_text(0) == "finished", "last state not shown"
        )
        assert view.transcript.lines[0].text == "finished"

    run_dashboard(alps_server.cli_config("user"), scenario)


def test_output_pane_skips_to_tail(alps_server: AlpsServer, user: httpx.Client):
    # seq 1 100000 writes 588 895 bytes, more than the pane reads at first.
    job_id = start_job(user, "seq 1 100000")
    wait_stopped(user, job_id)

    async def scenario(app: DashboardApp, pilot: Any) -> None:
        view = app.output_pane.view
        await select(app, pilot, job_id)
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: last_line(view) == "end of output: the job has stopped",
            "end of output not shown",
        )
        skipped = 588_895 - TAIL_BYTES
        assert view.line_text(0).startswith(
            f"Not shown: the first {skipped} bytes of stdout, then "
        )
        assert view.transcript.lines[-2].text == "100000"
        assert len(view.transcript) < 100_000

    run_dashboard(alps_server.cli_config("user"), scenario)


def test_output_pane_resumes_after_api_restart(
    make_server: Callable[..., AlpsServer],
):
    server = make_server()
    with server.client("user") as client:
        job_id = start_job(client, "echo before; sleep 3; echo after")

    async def scenario(app: DashboardApp, pilot: Any) -> None:
        view = app.output_pane.view
        await select(app, pilot, job_id)
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(view.transcript) == 1, "no first line")
        await asyncio.to_thread(server.stop_service, "api")
        await asyncio.to_thread(server.start_api)
        await wait_for(
            pilot,
            lambda: last_line(view) == "end of output: the job has stopped",
            "end of output not shown",
        )
        lines = [line.text for line in view.transcript.lines]
        assert lines[:2] == ["before", "after"]

    run_dashboard(server.cli_config("user"), scenario)


# Failures ----------------------------------------------------------------------------


def test_unreachable_api_is_shown_and_retried(tmp_path: Path, pki: Pki):
    server = AlpsServer(folder=tmp_path, pki=pki, worker_settings={}, port=free_port())
    config = server.cli_config("user")

    async def scenario(app: DashboardApp, pilot: Any) -> None:
        status = app.status_bar
        await wait_for(
            pilot, lambda: "API unreachable" in status.connection_text, "no warning"
        )
        assert "connection refused" in status.connection_text
        assert status.query_one("#connection").has_class("-problem")

        await pilot.press("n", *"true", "enter")
        await wait_for(pilot, lambda: "Cannot start" in app.message, "no error")
        assert "connection refused" in app.message

        await asyncio.to_thread(server.start)
        await wait_for(
            pilot, lambda: "Connected" in status.connection_text, "no reconnect"
        )
        assert not status.query_one("#connection").has_class("-problem")

    try:
        run_dashboard(config, scenario)
    finally:
        server.stop()


def test_stop_of_stopped_job_is_refused(alps_server: AlpsServer, user: httpx.Client):
    job_id = start_job(user, "true")
    wait_stopped(user, job_id)

    async def scenario(app: DashboardApp, pilot: Any) -> None:
        await select(app, pilot, job_id)
        await pilot.press("s")
        assert not isinstance(app.screen, ConfirmScreen)
        assert app.message == f"Job {job_id} has stopped already."

    run_dashboard(alps_server.cli_config("user"), scenario)
