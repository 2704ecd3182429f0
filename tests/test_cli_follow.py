"""``alps output -f`` and ``--tail`` against a real worker and API."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_support import (
    LiveAlps,
    alps_command,
    alps_env,
    ok,
    run_alps,
    start_job,
    wait_stopped,
)

from alps.cli import follow
from alps.client import ApiClient
from alps.timefmt import parse_rfc3339

from helpers import AlpsServer, wait_until

EVERY_BYTE = "".join(f"\\{value:03o}" for value in range(256))


@pytest.fixture
def user_env(alps_server: AlpsServer, tmp_path: Path) -> dict[str, str]:
    return alps_env(tmp_path, alps_server.cli_config("user"))


def stop_time(env: dict[str, str], job_id: int) -> float:
    """Return when the job stopped, in ``time.time()`` seconds."""
    return parse_rfc3339(wait_stopped(env, job_id)["stopTime"]).timestamp()


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder that jobs of any account can look into, removed at the end.

    The server may run jobs as an unprivileged account, which cannot enter the
    test's own folders (mode 0700).
    """
    folder = Path(tempfile.mkdtemp(prefix="alps-test-"))
    folder.chmod(0o711)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def stream_lines(env: dict[str, str], job_id: int, stream: str) -> int:
    """Return how many lines the job has written to ``stream`` so far."""
    result = ok(run_alps("output", job_id, env=env))
    data = result.stdout if stream == "stdout" else result.stderr
    return data.count(b"\n")


# Following -------------------------------------------------------------------------


def test_follow_shows_lines_as_they_come(user_env: dict[str, str]):
    job_id = start_job(user_env, "echo a; sleep 2; echo b; sleep 2; echo c")

    with LiveAlps("output", "-f", job_id, env=user_env) as live:
        code = live.wait()
    ended = time.time()
    stopped = stop_time(user_env, job_id)

    assert code == 0
    a, b, c = live.lines["stdout"]
    assert [a.data, b.data, c.data] == [b"a\n", b"b\n", b"c\n"]
    assert b.time - a.time > 1.0
    assert c.time - b.time > 1.5
    assert b.time < stopped - 1.5
    assert ended - stopped < 1.0
    assert live.output("stderr") == b""


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_follow_shows_line_while_other_stream_is_silent(
    user_env: dict[str, str], stream: str
):
    redirect = "" if stream == "stdout" else " >&2"
    job_id = start_job(user_env, f"echo early{redirect}; sleep 60")
    try:
        with LiveAlps("output", "-f", job_id, env=user_env) as live:
            line = live.next_line(stream)
            running = ok(run_alps("status", "--json", job_id, env=user_env))
            ok(run_alps("stop", job_id, env=user_env))
            code = live.wait()
    finally:
        run_alps("stop", job_id, env=user_env)

    assert line.data == b"early\n"
    assert '"jobStatus": "running"' in running.out
    assert code == 0


def test_follow_keeps_stderr_apart(user_env: dict[str, str]):
    job_id = start_job(
        user_env, "echo out; echo err >&2; sleep 1; echo out2; echo err2 >&2"
    )

    with LiveAlps("output", "-f", job_id, env=user_env) as live:
        code = live.wait()

    assert code == 0
    assert live.output("stdout") == b"out\nout2\n"
    assert live.output("stderr") == b"err\nerr2\n"


def test_follow_is_byte_exact_for_binary_data(user_env: dict[str, str]):
    job_id = start_job(
        user_env,
        f"printf '{EVERY_BYTE}'; sleep 1; printf '{EVERY_BYTE}'; "
        "printf '\\377\\000\\200x' >&2",
    )

    result = run_alps("output", "-f", job_id, env=user_env)

    assert result.code == 0
    assert result.stdout == bytes(range(256)) * 2
    assert result.stderr == b"\xff\x00\x80x"


def test_follow_of_stopped_job_prints_it_whole(user_env: dict[str, str]):
    job_id = start_job(user_env, "seq 1 20000; seq 5 9 >&2")
    wait_stopped(user_env, job_id)

    result = run_alps("output", "--follow", job_id, env=user_env)

    expected = "".join(f"{number}\n" for number in range(1, 20001))
    assert result.code == 0
    assert result.stdout == expected.encode()
    assert result.stderr == b"5\n6\n7\n8\n9\n"


def test_ctrl_c_during_follow_exits_130_quietly(user_env: dict[str, str]):
    job_id = start_job(user_env, "echo begun; sleep 60")
    try:
        with LiveAlps("output", "-f", job_id, env=user_env) as live:
            live.next_line("stdout")
            live.process.send_signal(signal.SIGINT)
            code = live.wait()
        status = ok(run_alps("status", "--json", job_id, env=user_env))
    finally:
        run_alps("stop", job_id, env=user_env)

    assert code == 130
    assert live.output("stderr") == b""
    assert '"jobStatus": "running"' in status.out


def test_follow_into_closed_pipe_exits_quietly(user_env: dict[str, str]):
    job_id = start_job(user_env, "seq 1 100000; sleep 60")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = subprocess.run(
            [alps_command(), "output", "-f", str(job_id)],
            env=user_env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=30,
        )
    finally:
        os.close(write_end)
        run_alps("stop", job_id, env=user_env)

    assert process.stderr == b""
    assert process.returncode == 128 + signal.SIGPIPE


@pytest.mark.parametrize("options", [("-f",), ("--tail", "3"), ("-f", "--tail", "3")])
def test_follow_of_missing_job_is_not_found(
    user_env: dict[str, str], options: tuple[str, ...]
):
    result = run_alps("output", *options, "999999999", env=user_env)

    assert result.code == 1
    assert result.err == "alps: error: no job found with that ID\n"
    assert result.stdout == b""


def test_follow_with_json_is_rejected(user_env: dict[str, str]):
    job_id = start_job(user_env, "true")

    result = run_alps("output", "-f", "--json", job_id, env=user_env)

    assert result.code == 1
    assert "--json cannot be combined with --follow or --tail" in result.err


# Reconnecting ----------------------------------------------------------------------


def wait_for_followers(server: AlpsServer, job_id: int) -> None:
    """Wait until the API has logged a follow request of each of the job's streams."""
    paths = [f"path=/output/{job_id}/{stream} " for stream in ("stdout", "stderr")]
    wait_until(lambda: all(path in server.log("api") for path in paths))


def test_follow_reconnects_after_api_restart(
    make_server: Callable[..., AlpsServer], tmp_path: Path
):
    # The job waits for a file in the test's private folder, so it runs as root.
    server = make_server(default_run_as="root")
    env = alps_env(tmp_path, server.cli_config("user"))
    go_on = tmp_path / "go-on"
    # stderr stays quiet until the end, so its follow request is still waiting
    # for the reply's first byte when the API goes away.
    job_id = start_job(
        env,
        f"echo before; while [ ! -e {go_on} ]; do sleep 0.05; done; "
        "echo after; echo late >&2",
    )

    with LiveAlps("output", "-f", job_id, env=env) as live:
        live.next_line("stdout")
        wait_for_followers(server, job_id)
        server.stop_service("api", signal.SIGKILL)
        server.start_api()
        go_on.touch()
        code = live.wait(timeout=30)

    assert code == 0, live.output("stderr")
    assert live.output("stdout") == b"before\nafter\n"
    assert live.output("stderr") == b"late\n"


def test_follow_gives_up_when_api_stays_down(
    make_server: Callable[..., AlpsServer], tmp_path: Path
):
    server = make_server()
    env = alps_env(tmp_path, server.cli_config("user"))
    job_id = start_job(env, "echo before; sleep 60")

    with LiveAlps("output", "-f", job_id, env=env) as live:
        live.next_line("stdout")
        wait_for_followers(server, job_id)
        server.stop_service("api", signal.SIGKILL)
        code = live.wait(timeout=30)

    errors = live.output("stderr").decode().splitlines()
    assert code == 1
    assert len(errors) == 1
    assert errors[0].startswith("alps: error: lost the connection while following")
    assert "5 attempts to reconnect failed: cannot connect to" in errors[0]


def test_follow_of_unreachable_api_fails_at_once(
    make_server: Callable[..., AlpsServer], tmp_path: Path
):
    server = make_server()
    env = alps_env(tmp_path, server.cli_config("user"))
    job_id = start_job(env, "sleep 60")
    server.stop_service("api", signal.SIGKILL)

    started = time.monotonic()
    result = run_alps("output", "-f", job_id, env=env)
    elapsed = time.monotonic() - started

    assert result.code == 1
    assert result.err == (
        f"alps: error: cannot connect to {server.address}: connection refused; "
        "is the ALPS API running?\n"
    )
    assert elapsed < 3


def test_quiet_follow_outlasts_read_timeouts(
    alps_server: AlpsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Every read timeout of a quiet follow would count as a failed attempt if
    # it were taken for a lost connection, and one attempt is all there is.
    monkeypatch.setattr(follow, "RECONNECT_PAUSES", (0.1,))

    def open_client() -> ApiClient:
        return ApiClient(
            alps_server.address,
            alps_server.pki.ca_cert,
            alps_server.pki.cert("user"),
            alps_server.pki.key("user"),
            read_timeout=0.3,
        )

    with open_client() as client:
        job_id = client.start("sleep 2; echo done")["jobID"]
    target = tmp_path / "stdout"
    with target.open("wb") as file:
        copier = follow.StreamCopier(
            open_client, job_id, "stdout", file.fileno(), follow=True
        )
        copier.run()

    assert target.read_bytes() == b"done\n"


# --tail ----------------------------------------------------------------------------


def test_tail_shows_last_lines_of_each_stream(user_env: dict[str, str]):
    job_id = start_job(user_env, "seq 1 10; seq 11 20 >&2")
    wait_stopped(user_env, job_id)

    result = run_alps("output", "--tail", "2", job_id, env=user_env)

    assert result.code == 0
    assert result.stdout == b"9\n10\n"
    assert result.stderr == b"19\n20\n"


def test_tail_with_follow_goes_on_with_new_lines(
    user_env: dict[str, str], shared_folder: Path
):
    go_on = shared_folder / "go-on"
    job_id = start_job(
        user_env, f"seq 1 10; while [ ! -e {go_on} ]; do sleep 0.05; done; echo 11"
    )
    try:
        wait_until(lambda: stream_lines(user_env, job_id, "stdout") == 10)
        with LiveAlps("output", "-f", "--tail", "2", job_id, env=user_env) as live:
            first = [live.next_line().data, live.next_line().data]
            go_on.touch()
            code = live.wait()
    finally:
        run_alps("stop", job_id, env=user_env)

    assert first == [b"9\n", b"10\n"]
    assert code == 0
    assert live.output("stdout") == b"9\n10\n11\n"


@pytest.mark.parametrize(
    ("command", "lines", "expected"),
    [
        ("printf 'a\\nb\\nc'", "2", b"b\nc"),
        ("printf 'a\\nb\\n'", "5", b"a\nb\n"),
        ("printf 'a\\n\\n\\n'", "2", b"\n\n"),
        ("seq 1 10", "0", b""),
        ("true", "3", b""),
    ],
)
def test_tail_counts_lines_as_tail_does(
    user_env: dict[str, str], command: str, lines: str, expected: bytes
):
    job_id = start_job(user_env, command)
    wait_stopped(user_env, job_id)

    result = run_alps("output", "--tail", lines, job_id, env=user_env)

    assert result.code == 0
    assert result.stdout == expected


def test_tail_finds_lines_longer_than_first_window(user_env: dict[str, str]):
    # Each line is 20000 bytes, so the first window of 4 KiB contains no line break
    # before the last one and earlier windows must be read.
    job_id = start_job(
        user_env,
        "for c in a b c d e; do head -c 20000 /dev/zero | tr '\\0' $c; echo; done",
    )
    wait_stopped(user_env, job_id)

    result = run_alps("output", "--tail", "2", job_id, env=user_env)

    assert result.code == 0
    assert result.stdout == b"d" * 20000 + b"\n" + b"e" * 20000 + b"\n"


def test_tail_of_many_lines_reads_several_windows(user_env: dict[str, str]):
    job_id = start_job(user_env, "seq 1 300000")
    wait_stopped(user_env, job_id)

    result = run_alps("output", "--tail", "250000", job_id, env=user_env)

    expected = "".join(f"{number}\n" for number in range(50001, 300001))
    assert result.code == 0
    assert result.stdout == expected.encode()
