"""The job commands against a real worker and API: human output, --json, errors."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cli_support import (
    STARTED,
    Result,
    alps_command,
    alps_env,
    ok,
    run_alps,
    start_job,
    status_json,
    wait_stopped,
)

from helpers import AlpsServer


@pytest.fixture
def user_env(alps_server: AlpsServer, tmp_path: Path) -> dict[str, str]:
    return alps_env(tmp_path, alps_server.cli_config("user"))


@pytest.fixture
def admin_env(alps_server: AlpsServer, tmp_path: Path) -> dict[str, str]:
    return alps_env(tmp_path, alps_server.cli_config("admin"))


@pytest.fixture
def other_env(alps_server: AlpsServer, tmp_path: Path) -> dict[str, str]:
    return alps_env(tmp_path, alps_server.cli_config("other"))


def status_fields(result: Result) -> dict[str, str]:
    """Split ``Label: value`` lines of ``alps status`` into a dict."""
    fields = {}
    for line in result.out.splitlines():
        label, _, value = line.partition(":")
        fields[label] = value.strip()
    return fields


# The flow of a session -----------------------------------------------------------


def test_full_flow_of_user_and_admin(
    user_env: dict[str, str], admin_env: dict[str, str]
):
    first = start_job(user_env, "echo hello; echo oops >&2; exit 3")
    wait_stopped(user_env, first)

    status = ok(run_alps("status", first, env=user_env))
    assert status_fields(status)["Exit code"] == "3"

    output = ok(run_alps("output", first, env=user_env))
    assert output.stdout == b"hello\n"
    assert output.stderr == b"oops\n"

    second = start_job(user_env, "sleep 100")
    stopped = ok(run_alps("stop", second, env=user_env))
    assert stopped.out == (
        f"Stopped Job {second}. Output will be available for 1 hour.\n"
    )

    fields = status_fields(ok(run_alps("status", second, env=user_env)))
    assert fields["Exit code"] == "143"
    assert fields["Signal"] == "SIGTERM"

    third = start_job(user_env, "sleep 100")
    ok(run_alps("take", third, env=admin_env))
    denied = run_alps("status", third, env=user_env)
    assert denied.code == 1
    assert denied.err == "alps: error: no job found with that ID\n"
    ok(run_alps("stop", third, env=admin_env))


# start ---------------------------------------------------------------------------


def test_start_prints_job_id_and_owner(user_env: dict[str, str]):
    result = ok(run_alps("start", "true", env=user_env))

    match = STARTED.fullmatch(result.out)
    assert match is not None
    assert match.group(2) == "user@example.com"


def test_start_joins_several_words_with_spaces(user_env: dict[str, str]):
    result = ok(run_alps("start", "--", "printf", "%s-", "a", "b", env=user_env))
    job_id = int(STARTED.fullmatch(result.out).group(1))
    wait_stopped(user_env, job_id)

    assert status_json(user_env, job_id)["job"] == "printf %s- a b"
    assert ok(run_alps("output", job_id, env=user_env)).stdout == b"a-b-"


def test_start_rejects_blank_command(user_env: dict[str, str]):
    result = run_alps("start", "  ", env=user_env)

    assert result.code == 1
    assert result.err.startswith("alps: error: the command is empty")


def test_start_without_command_is_usage_error(user_env: dict[str, str]):
    result = run_alps("start", env=user_env)

    assert result.code == 2
    assert "usage: alps start" in result.err


@pytest.mark.parametrize(
    ("option", "value", "shown"),
    [
        ("--memory", "256M", "memory 256 MiB"),
        ("--memory", "1610612736", "memory 1.5 GiB"),
        ("--cpu", "0.5", "cpu 0.5"),
        ("--pids", "100", "pids 100"),
    ],
)
def test_start_limit_option_shows_in_status(
    user_env: dict[str, str], option: str, value: str, shown: str
):
    job_id = start_job(user_env, "true", option, value)

    fields = status_fields(ok(run_alps("status", job_id, env=user_env)))

    assert shown in fields["Limits"].split(", ")


def test_start_sends_every_limit(user_env: dict[str, str]):
    job_id = start_job(
        user_env, "true", "--memory", "64M", "--cpu", "0.25", "--pids", "20"
    )

    limits = status_json(user_env, job_id)["limits"]
    fields = status_fields(ok(run_alps("status", job_id, env=user_env)))

    assert limits == {"memory": 64 << 20, "cpu": 0.25, "pids": 20}
    assert fields["Limits"] == "memory 64 MiB, cpu 0.25, pids 20"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "--memory",
            "12X",
            "field 'limits.memory': invalid size \"12X\": use bytes or a number "
            "with K, M, G or T, like 512M",
        ),
        (
            "--memory",
            "10K",
            "field 'limits.memory': \"10K\" is below the minimum of 1M",
        ),
        ("--pids", "5000", "field 'limits.pids': 5000 is above the maximum of 4096"),
        ("--cpu", "100000", "field 'limits.cpu': 100000.0 is out of range"),
    ],
)
def test_start_with_invalid_limit_shows_api_message(
    user_env: dict[str, str], option: str, value: str, message: str
):
    result = run_alps("start", option, value, "--", "true", env=user_env)

    assert result.code == 1
    assert result.err.startswith(f"alps: error: {message}")
    assert result.err.count("\n") == 1


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--cpu", "half", "invalid CPU count 'half': expected a positive number"),
        ("--cpu", "nan", "invalid CPU count 'nan': expected a positive number"),
        ("--cpu", "0", "invalid CPU count '0': expected a positive number"),
        ("--pids", "0", "invalid process count '0': expected a positive integer"),
        ("--pids", "1.5", "invalid process count '1.5': expected a positive integer"),
    ],
)
def test_start_rejects_limit_of_wrong_type(
    user_env: dict[str, str], option: str, value: str, message: str
):
    result = run_alps("start", option, value, "--", "true", env=user_env)

    assert result.code == 2
    assert message in result.err


# status --------------------------------------------------------------------------


def test_status_of_running_job_shows_aligned_lines(user_env: dict[str, str]):
    job_id = start_job(user_env, "sleep 100", "--pids", "50")
    try:
        result = ok(run_alps("status", job_id, env=user_env))
    finally:
        ok(run_alps("stop", job_id, env=user_env))

    lines = result.out.splitlines()
    # A root worker runs jobs as an unprivileged account, which status names.
    runs_as = ["Runs as"] if os.geteuid() == 0 else []
    assert [line.split(":")[0] for line in lines] == [
        "ID",
        "Command",
        "Owner",
        *runs_as,
        "Limits",
        "Status",
        "Started",
    ]
    assert len({line.index(line.split(":", 1)[1].strip()) for line in lines}) == 1
    assert status_fields(result)["Status"] == "running"
    assert status_fields(result)["Command"] == "sleep 100"
    assert status_fields(result)["Limits"] == "pids 50"


def test_status_of_stopped_job_shows_end_and_expiry(user_env: dict[str, str]):
    job_id = start_job(user_env, "exit 7")
    wait_stopped(user_env, job_id)

    fields = status_fields(ok(run_alps("status", job_id, env=user_env)))

    assert fields["Status"] == "stopped"
    assert fields["Exit code"] == "7"
    assert "Stopped" in fields
    assert "Output until" in fields
    assert "Signal" not in fields


def test_status_shows_times_in_local_zone(alps_server: AlpsServer, tmp_path: Path):
    env = alps_env(tmp_path, alps_server.cli_config("user"), TZ="Asia/Kolkata")
    job_id = start_job(env, "true")
    body = wait_stopped(env, job_id)

    fields = status_fields(ok(run_alps("status", job_id, env=env)))

    start = datetime.fromisoformat(body["startTime"].replace("Z", "+00:00"))
    local = start.astimezone(ZoneInfo("Asia/Kolkata"))
    assert fields["Started"] == local.strftime("%Y-%m-%d %H:%M:%S +05:30")


def test_status_escapes_control_characters(user_env: dict[str, str]):
    job_id = start_job(user_env, "echo a\necho \x1b[31mb")

    fields = status_fields(ok(run_alps("status", job_id, env=user_env)))

    assert fields["Command"] == "echo a\\necho \\x1b[31mb"


def test_status_of_unknown_job_is_not_found(user_env: dict[str, str]):
    result = run_alps("status", "999999999", env=user_env)

    assert result.code == 1
    assert result.err == "alps: error: no job found with that ID\n"


def test_status_of_another_users_job_is_not_found(
    user_env: dict[str, str], other_env: dict[str, str]
):
    job_id = start_job(other_env, "true")

    result = run_alps("status", job_id, env=user_env)

    assert result.code == 1
    assert result.err == "alps: error: no job found with that ID\n"


@pytest.mark.parametrize("text", ["0", "-3", "x", "1.5"])
def test_status_rejects_invalid_job_id(user_env: dict[str, str], text: str):
    result = run_alps("status", "--", text, env=user_env)

    assert result.code == 2
    assert f"invalid job ID {text!r}: expected a positive integer" in result.err


def test_identity_outside_acl_is_not_authorized(
    alps_server: AlpsServer, tmp_path: Path
):
    env = alps_env(tmp_path, alps_server.cli_config("stranger"))

    result = run_alps("list", env=env)

    assert result.code == 1
    assert result.err == (
        "alps: error: you are not authorized to perform that action\n"
    )


# output --------------------------------------------------------------------------


def test_output_is_byte_exact_for_binary_data(user_env: dict[str, str]):
    every_byte = "".join(f"\\{value:03o}" for value in range(256))
    job_id = start_job(
        user_env, f"printf '{every_byte}'; printf '\\377\\000\\200x' >&2"
    )
    wait_stopped(user_env, job_id)

    result = ok(run_alps("output", job_id, env=user_env))

    assert result.stdout == bytes(range(256))
    assert result.stderr == b"\xff\x00\x80x"


def test_output_larger_than_json_limit_is_whole(make_server, tmp_path: Path):
    server: AlpsServer = make_server(output_json_max=1000)
    env = alps_env(tmp_path, server.cli_config("user"))
    job_id = start_job(env, "seq 1 2000; seq 5 900 >&2")
    wait_stopped(env, job_id)

    result = ok(run_alps("output", job_id, env=env))

    expected_stdout = "".join(f"{number}\n" for number in range(1, 2001))
    expected_stderr = "".join(f"{number}\n" for number in range(5, 901))
    assert result.stdout == expected_stdout.encode()
    assert result.stderr == expected_stderr.encode()


def test_output_of_silent_job_is_empty(user_env: dict[str, str]):
    job_id = start_job(user_env, "true")
    wait_stopped(user_env, job_id)

    result = ok(run_alps("output", job_id, env=user_env))

    assert result.stdout == b""
    assert result.stderr == b""


def test_output_of_running_job_shows_output_so_far(user_env: dict[str, str]):
    job_id = start_job(user_env, "echo early; sleep 100")
    try:
        deadline = time.monotonic() + 10
        while (result := ok(run_alps("output", job_id, env=user_env))).stdout == b"":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        ok(run_alps("stop", job_id, env=user_env))

    assert result.stdout == b"early\n"


# stop ----------------------------------------------------------------------------


def test_stop_of_stopped_job_repeats_message(user_env: dict[str, str]):
    job_id = start_job(user_env, "true")
    wait_stopped(user_env, job_id)

    result = ok(run_alps("stop", job_id, env=user_env))

    assert result.out == f"Stopped Job {job_id}. Output will be available for 1 hour.\n"


# list ----------------------------------------------------------------------------


def test_list_shows_header_and_own_jobs(
    user_env: dict[str, str], other_env: dict[str, str]
):
    mine = start_job(user_env, "exit 4")
    theirs = start_job(other_env, "true")
    wait_stopped(user_env, mine)

    lines = ok(run_alps("list", env=user_env)).out.splitlines()

    assert lines[0].split() == ["ID", "STATUS", "EXIT", "STARTED", "COMMAND"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert str(theirs) not in rows
    assert rows[str(mine)].split()[1:3] == ["stopped", "4"]
    assert rows[str(mine)].endswith("  exit 4")


def test_list_aligns_columns(user_env: dict[str, str]):
    start_job(user_env, "true")

    lines = ok(run_alps("list", env=user_env)).out.splitlines()

    header = lines[0]
    for column in ("STATUS", "EXIT", "STARTED", "COMMAND"):
        position = header.index(column)
        for line in lines[1:]:
            assert line[position - 2 : position] == "  ", line


def test_list_cuts_commands_to_columns(alps_server: AlpsServer, tmp_path: Path):
    env = alps_env(tmp_path, alps_server.cli_config("user"), COLUMNS="60")
    long_command = "echo " + "x" * 200
    job_id = start_job(env, long_command)

    lines = ok(run_alps("list", env=env)).out.splitlines()

    assert max(len(line) for line in lines) <= 60
    row = next(line for line in lines if line.split()[0] == str(job_id))
    assert row.endswith("xxx...")


def test_list_without_terminal_keeps_whole_commands(user_env: dict[str, str]):
    long_command = "echo " + "y" * 300
    job_id = start_job(user_env, long_command)

    lines = ok(run_alps("list", env=user_env)).out.splitlines()

    row = next(line for line in lines if line.split()[0] == str(job_id))
    assert row.endswith(long_command)


def test_list_all_shows_every_owner_to_admin(
    user_env: dict[str, str], other_env: dict[str, str], admin_env: dict[str, str]
):
    mine = start_job(user_env, "true")
    theirs = start_job(other_env, "true")

    lines = ok(run_alps("list", "--all", env=admin_env)).out.splitlines()

    assert lines[0].split() == ["ID", "OWNER", "STATUS", "EXIT", "STARTED", "COMMAND"]
    owners = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert owners[str(mine)] == "user@example.com"
    assert owners[str(theirs)] == "other@example.com"


def test_list_all_by_user_is_forbidden(user_env: dict[str, str]):
    result = run_alps("list", "--all", env=user_env)

    assert result.code == 1
    assert result.err == (
        "alps: error: you are forbidden to list all jobs: not an admin\n"
    )


def test_list_into_closed_pipe_exits_quietly(user_env: dict[str, str]):
    start_job(user_env, "true")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = subprocess.run(
            [alps_command(), "list"],
            env=user_env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=30,
        )
    finally:
        os.close(write_end)

    assert process.stderr == b""
    assert process.returncode == 128 + signal.SIGPIPE


# take ----------------------------------------------------------------------------


def test_take_names_new_and_old_owner(
    user_env: dict[str, str], admin_env: dict[str, str]
):
    job_id = start_job(user_env, "sleep 100")
    try:
        result = ok(run_alps("take", job_id, env=admin_env))
    finally:
        ok(run_alps("stop", job_id, env=admin_env))

    assert result.out == (
        f"Took Job {job_id} from user@example.com. "
        "Its owner is now admin@example.com.\n"
    )


def test_take_by_user_is_forbidden(user_env: dict[str, str], other_env: dict[str, str]):
    job_id = start_job(other_env, "true")

    result = run_alps("take", job_id, env=user_env)

    assert result.code == 1
    assert result.err == (
        "alps: error: you are forbidden to take that job: not an admin\n"
    )


# --json --------------------------------------------------------------------------


def test_start_json_prints_api_body(user_env: dict[str, str]):
    body = json.loads(ok(run_alps("start", "--json", "true", env=user_env)).out)

    assert body["status"] == 200
    assert body["owner"] == "user@example.com"
    assert set(body) >= {"jobID", "owner", "startTime"}


def test_status_json_equals_api_body(alps_server: AlpsServer, user_env):
    job_id = start_job(user_env, "exit 2")
    wait_stopped(user_env, job_id)

    printed = status_json(user_env, job_id)

    with alps_server.client("user") as client:
        assert printed == client.get(f"/status/{job_id}").json()


def test_output_json_keeps_base64_fields(user_env: dict[str, str]):
    job_id = start_job(user_env, "printf '\\377ab'; printf err >&2")
    wait_stopped(user_env, job_id)

    body = json.loads(ok(run_alps("output", "--json", job_id, env=user_env)).out)

    assert base64.b64decode(body["stdoutBytes"]) == b"\xffab"
    assert body["stderrBytes"] == base64.b64encode(b"err").decode()
    assert body["stdoutSize"] == 3


def test_list_json_lists_own_jobs(user_env: dict[str, str]):
    job_id = start_job(user_env, "true")

    body = json.loads(ok(run_alps("list", "--json", env=user_env)).out)

    assert job_id in [job["jobID"] for job in body["jobs"]]


def test_stop_and_take_json_print_api_bodies(
    user_env: dict[str, str], admin_env: dict[str, str]
):
    job_id = start_job(user_env, "sleep 100")
    taken = json.loads(ok(run_alps("take", "--json", job_id, env=admin_env)).out)
    stopped = json.loads(ok(run_alps("stop", "--json", job_id, env=admin_env)).out)

    assert taken == {
        "status": 200,
        "jobID": job_id,
        "owner": "admin@example.com",
        "oldOwner": "user@example.com",
    }
    assert stopped["exitCode"] == 143
    assert set(stopped) >= {"stopTime", "outputExpires", "startTime"}


# Interruption and help -----------------------------------------------------------


def test_ctrl_c_exits_130_without_traceback(tmp_path: Path, alps_server: AlpsServer):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        config = tmp_path / "silent.toml"
        config.write_text(
            alps_server.cli_config("user")
            .read_text()
            .replace(alps_server.address, f"127.0.0.1:{silent.getsockname()[1]}")
        )
        process = subprocess.Popen(
            [alps_command(), "list"],
            env=alps_env(tmp_path, config),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            silent.settimeout(20)
            connection, _ = silent.accept()
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=20)
            connection.close()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    assert process.returncode == 130
    assert stderr == b""


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        ((), "Run shell commands on an ALPS server"),
        (("config",), "created with mode 0600"),
        (("config", "host"), "address of the ALPS API"),
        (("config", "ca"), "CA certificate"),
        (("config", "user"), "client certificate and private key"),
        (("start",), "alps start -- ls -l /tmp"),
        (("start",), "--memory SIZE memory limit in bytes, or with a unit K, M"),
        (("start",), "--cpu CPUS CPU time limit in CPUs"),
        (("start",), "--pids N maximum number of processes and threads"),
        (("stop",), "SIGTERM"),
        (("status",), "exit code"),
        (("output",), "its stderr to stderr"),
        (("output",), "-f, --follow keep writing output as it comes"),
        (("output",), "--tail N write only the last N lines"),
        (("list",), "List your jobs"),
        (("take",), "admins only"),
        (("dev",), "--retention DURATION"),
    ],
)
def test_help_describes_each_command(tmp_path: Path, args: tuple, phrase: str):
    result = run_alps(*args, "--help", env=alps_env(tmp_path))

    assert result.code == 0
    assert phrase in " ".join(result.out.split())
