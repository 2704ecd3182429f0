"""The worker and its Hub, called directly over Pyro5 as the API would call them."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time

import pytest

from alps.errors import Forbidden, InvalidRequest, JobNotFound
from alps.ipc import WorkerClient

from helpers import AlpsServer, console_script, wait_until

USER = ("user@example.com", "user")
OTHER = ("other@example.com", "user")
ADMIN = ("admin@example.com", "admin")


@pytest.fixture
def hub(alps_server: AlpsServer) -> WorkerClient:
    return WorkerClient(str(alps_server.socket_path))


def run(hub: WorkerClient, command: str, caller=USER, timeout: float = 10.0) -> dict:
    """Start ``command`` and return its output body once it has stopped."""
    job_id = hub.start(*caller, command)["jobID"]
    wait_until(lambda: hub.status(*caller, job_id)["jobStatus"] == "stopped", timeout)
    return hub.output(*caller, job_id)


# Ownership, enforced by the Hub itself ------------------------------------------------


def test_hub_hides_other_users_job(hub):
    job_id = hub.start(*USER, "true")["jobID"]

    for call in (hub.status, hub.output, hub.stop):
        with pytest.raises(JobNotFound):
            call(*OTHER, job_id)


def test_hub_refuses_take_by_user(hub):
    job_id = hub.start(*OTHER, "true")["jobID"]

    with pytest.raises(Forbidden):
        hub.take(*USER, job_id)


def test_hub_lets_admin_take(hub):
    job_id = hub.start(*USER, "true")["jobID"]

    result = hub.take(*ADMIN, job_id)

    assert result == {
        "jobID": job_id,
        "owner": "admin@example.com",
        "oldOwner": "user@example.com",
    }
    with pytest.raises(JobNotFound):
        hub.status(*USER, job_id)


def test_hub_lists_callers_jobs_only(hub):
    mine = hub.start(*USER, "true")["jobID"]
    theirs = hub.start(*OTHER, "true")["jobID"]

    ids = [job["jobID"] for job in hub.list(*USER)]

    assert mine in ids
    assert theirs not in ids


@pytest.mark.parametrize("job_id", [0, -3, True, "7", 2**63])
def test_hub_rejects_bad_job_id(hub, job_id):
    with pytest.raises(InvalidRequest):
        hub.status(*USER, job_id)


def test_hub_rejects_overlong_command(hub):
    with pytest.raises(InvalidRequest, match="limit is 65536 bytes"):
        hub.start(*USER, "x" * 65537)


# How jobs run ------------------------------------------------------------------------


def test_exit_code_is_recorded(hub):
    body = run(hub, "exit 3")

    assert body["exitCode"] == 3
    assert "signal" not in body


def test_signal_death_reports_128_plus_signal(hub):
    body = run(hub, "kill -9 $$")

    assert body["exitCode"] == 137
    assert body["signal"] == "SIGKILL"


def test_exit_137_is_not_a_signal(hub):
    body = run(hub, "exit 137")

    assert body["exitCode"] == 137
    assert "signal" not in body


def test_stdout_and_stderr_are_kept_apart(hub):
    body = run(hub, "echo out; echo err >&2; echo out2")

    assert body["stdoutBytes"] == b"out\nout2\n"
    assert body["stderrBytes"] == b"err\n"


def test_write_to_dev_stdout_appends(hub):
    body = run(hub, "echo first; echo second > /dev/stdout; echo third")

    assert body["stdoutBytes"] == b"first\nsecond\nthird\n"


def test_stdin_is_empty(hub):
    started = time.monotonic()

    body = run(hub, "cat; echo done")

    assert body["stdoutBytes"] == b"done\n"
    assert time.monotonic() - started < 5


def test_job_sees_only_standard_descriptors(hub):
    body = run(hub, "ls /proc/self/fd")

    # ls itself opens one descriptor for the folder it lists.
    assert sorted(body["stdoutBytes"].split()) == [b"0", b"1", b"2", b"3"]


def test_job_environment_is_the_documented_set(hub):
    body = run(hub, "env")

    names = {line.split(b"=", 1)[0] for line in body["stdoutBytes"].splitlines()}
    assert names == {
        b"PATH",
        b"HOME",
        b"USER",
        b"LOGNAME",
        b"SHELL",
        b"LANG",
        b"PWD",
        b"ALPS_JOB_ID",
    }


def test_job_signals_are_reset(hub):
    body = run(hub, "grep -E '^Sig(Blk|Ign)' /proc/self/status; yes | head -n 1")

    lines = body["stdoutBytes"].decode().splitlines()
    assert lines[0].split() == ["SigBlk:", "0000000000000000"]
    assert lines[1].split() == ["SigIgn:", "0000000000000000"]
    assert lines[2] == "y"


def test_command_runs_in_a_shell(hub):
    body = run(hub, "cd /proc && pwd")

    assert body["stdoutBytes"] == b"/proc\n"


def test_stop_kills_grandchildren(hub):
    job_id = hub.start(*USER, "setsid sleep 987 & sleep 987; wait")["jobID"]
    wait_until(lambda: _pids_running("sleep 987"))

    stopped = hub.stop(*USER, job_id)

    assert stopped["jobStatus"] == "stopped"
    assert _pids_running("sleep 987") == []


def test_leftovers_end_with_the_shell(hub):
    body = run(hub, "sleep 654 & echo spawned")

    assert body["exitCode"] == 0
    assert _pids_running("sleep 654") == []


def test_stop_gives_a_trapping_job_its_grace(hub):
    job_id = hub.start(
        *USER, "trap 'echo bye; sleep 1; exit 0' TERM; echo ready; sleep 100 & wait"
    )["jobID"]
    wait_until(lambda: hub.output(*USER, job_id)["stdoutBytes"] == b"ready\n")

    stopped = hub.stop(*USER, job_id)

    assert stopped["exitCode"] == 0
    assert hub.output(*USER, job_id)["stdoutBytes"] == b"ready\nbye\n"


def test_stop_kills_a_job_that_ignores_term(alps_server, hub):
    job_id = hub.start(*USER, "trap '' TERM; echo ready; while :; do sleep 1; done")[
        "jobID"
    ]
    wait_until(lambda: hub.output(*USER, job_id)["stdoutBytes"] == b"ready\n")
    started = time.monotonic()

    stopped = hub.stop(*USER, job_id)

    assert stopped["exitCode"] == 137
    assert stopped["signal"] == "SIGKILL"
    grace = 3.0  # the test server's stop_grace
    assert time.monotonic() - started >= grace - 0.1


# The worker process ---------------------------------------------------------------


def test_socket_is_private(alps_server: AlpsServer):
    socket_mode = stat.S_IMODE(alps_server.socket_path.stat().st_mode)
    folder_mode = stat.S_IMODE(alps_server.socket_path.parent.stat().st_mode)

    assert socket_mode == 0o600
    assert folder_mode & 0o077 == 0


def test_worker_logs_lifecycle_events(alps_server: AlpsServer, hub):
    job_id = run(hub, "true")["jobID"]

    log = alps_server.log("worker")

    assert "worker ready socket=" in log
    assert f"job started id={job_id} owner=user@example.com" in log
    assert f"job stopped id={job_id} exit_code=0" in log


def _start_worker(config) -> subprocess.CompletedProcess:
    return subprocess.run(
        [console_script("alps-worker"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_live_worker_is_not_replaced(alps_server: AlpsServer, tmp_path):
    config = tmp_path / "server.toml"
    config.write_text(
        f'[worker]\nsocket = "{alps_server.socket_path}"\nstate_dir = "{tmp_path}/s"\n'
    )

    result = _start_worker(config)

    assert result.returncode != 0
    assert "another worker is already serving" in result.stderr
    assert alps_server.socket_path.exists()


def test_state_folder_is_locked(alps_server: AlpsServer, tmp_path):
    (tmp_path / "run").mkdir(mode=0o700)
    config = tmp_path / "server.toml"
    config.write_text(
        f'[worker]\nsocket = "{tmp_path}/run/w.sock"\n'
        f'state_dir = "{alps_server.state_dir}"\n'
    )

    result = _start_worker(config)

    assert result.returncode != 0
    assert "another worker is using the state folder" in result.stderr


def test_socket_folder_writable_by_others_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    config = tmp_path / "server.toml"
    config.write_text(
        f'[worker]\nsocket = "{shared}/w.sock"\nstate_dir = "{tmp_path}/state"\n'
    )

    result = _start_worker(config)

    assert result.returncode != 0
    assert "is writable by others" in result.stderr


def test_stale_socket_is_replaced(make_server, tmp_path):
    server = make_server()
    server.stop_service("worker")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(server.socket_path))  # a file with no listener, as after a crash
    stale.close()

    server.start_worker()

    assert WorkerClient(str(server.socket_path)).ping()["pid"] > 0


def test_invalid_config_names_the_key(tmp_path):
    config = tmp_path / "server.toml"
    config.write_text('[worker]\nsocket = "s"\nstate_dir = "d"\nretention = "soon"\n')

    result = _start_worker(config)

    assert result.returncode == 2
    assert "[worker] retention: invalid duration 'soon'" in result.stderr


# Records across restarts ------------------------------------------------------------


def test_records_and_output_survive_restart(make_server):
    server = make_server()
    hub = WorkerClient(str(server.socket_path))
    finished = run(hub, "echo kept; exit 9")

    server.stop_service("worker")
    server.start_worker()
    after = hub.output(*USER, finished["jobID"])

    assert after["exitCode"] == 9
    assert after["stdoutBytes"] == b"kept\n"


def test_ids_are_not_reused_after_restart(make_server):
    server = make_server()
    hub = WorkerClient(str(server.socket_path))
    first = hub.start(*USER, "true")["jobID"]

    server.stop_service("worker")
    server.start_worker()
    second = hub.start(*USER, "true")["jobID"]

    assert second > first


def test_killed_worker_keeps_finished_records(make_server):
    server = make_server()
    hub = WorkerClient(str(server.socket_path))
    finished = run(hub, "exit 4")

    server.stop_service("worker", signal.SIGKILL)
    server.start_worker()

    assert hub.status(*USER, finished["jobID"])["exitCode"] == 4


def test_running_job_is_reattached_after_restart(make_server):
    server = make_server(keep_jobs_on_exit=True)
    hub = WorkerClient(str(server.socket_path))
    job_id = hub.start(*USER, "echo before; sleep 2; echo after; exit 6")["jobID"]
    wait_until(lambda: hub.output(*USER, job_id)["stdoutBytes"] == b"before\n")

    server.stop_service("worker")
    server.start_worker()

    assert hub.status(*USER, job_id)["jobStatus"] == "running"
    body = wait_until(
        lambda: (o := hub.output(*USER, job_id))["jobStatus"] == "stopped" and o
    )
    assert body["exitCode"] == 6
    assert body["stdoutBytes"] == b"before\nafter\n"
    assert f"job reattached id={job_id}" in server.log("worker")


def test_stopped_jobs_are_pruned_after_retention(make_server):
    server = make_server(retention="1s")
    hub = WorkerClient(str(server.socket_path))
    job_id = run(hub, "echo gone")["jobID"]
    folder = server.state_dir / "jobs" / str(job_id)

    wait_until(lambda: not folder.exists(), timeout=10)

    with pytest.raises(JobNotFound):
        hub.status(*USER, job_id)
    assert f"job pruned id={job_id}" in server.log("worker")
    assert hub.start(*USER, "true")["jobID"] > job_id


def _pids_running(pattern: str) -> list[int]:
    result = subprocess.run(
        ["pgrep", "-f", pattern], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in result.stdout.split() if int(pid) != os.getpid()]
