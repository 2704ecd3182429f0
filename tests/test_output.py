"""Output through the API: raw windows, Range, the JSON cap, and live follow."""

from __future__ import annotations

import base64
import os
import threading
import time

import httpx
import pytest

from helpers import AlpsServer, wait_stopped, wait_until

NOT_FOUND = {"status": 404, "error": "no job found with that ID"}


@pytest.fixture
def user(alps_server: AlpsServer):
    with alps_server.client("user") as client:
        yield client


def start(client: httpx.Client, command: str) -> int:
    response = client.post("/start", json={"job": command})
    assert response.status_code == 200, response.text
    return response.json()["jobID"]


def finished(client: httpx.Client, command: str) -> int:
    job_id = start(client, command)
    wait_stopped(client, job_id)
    return job_id


# Raw windows ----------------------------------------------------------------------


def test_raw_stdout_is_byte_exact(user):
    job_id = finished(user, r"printf '\210\377\n'; printf '\303' >&2")

    stdout = user.get(f"/output/{job_id}/stdout")
    stderr = user.get(f"/output/{job_id}/stderr")

    assert stdout.status_code == 200
    assert stdout.headers["content-type"] == "application/octet-stream"
    assert stdout.content == b"\x88\xff\n"
    assert stderr.content == b"\xc3"


def test_raw_offset_and_limit_read_a_window(user):
    job_id = finished(user, "printf 0123456789")

    response = user.get(f"/output/{job_id}/stdout", params={"offset": 3, "limit": 4})

    assert response.status_code == 200
    assert response.content == b"3456"
    assert response.headers["alps-stream-size"] == "10"


def test_raw_offset_past_end_is_empty(user):
    job_id = finished(user, "printf 0123456789")

    response = user.get(f"/output/{job_id}/stdout", params={"offset": 50})

    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize(
    ("header", "body", "content_range"),
    [
        ("bytes=2-5", b"2345", "bytes 2-5/10"),
        ("bytes=7-", b"789", "bytes 7-9/10"),
        ("bytes=-3", b"789", "bytes 7-9/10"),
        ("bytes=-30", b"0123456789", "bytes 0-9/10"),
        ("bytes=8-100", b"89", "bytes 8-9/10"),
    ],
)
def test_raw_range_gets_206(user, header, body, content_range):
    job_id = finished(user, "printf 0123456789")

    response = user.get(f"/output/{job_id}/stdout", headers={"range": header})

    assert response.status_code == 206
    assert response.content == body
    assert response.headers["content-range"] == content_range


def test_raw_range_past_end_gets_416(user):
    job_id = finished(user, "printf 0123456789")

    response = user.get(f"/output/{job_id}/stdout", headers={"range": "bytes=10-"})

    assert response.status_code == 416
    assert response.json()["status"] == 416
    assert response.headers["content-range"] == "bytes */10"


@pytest.mark.parametrize(
    ("path", "headers", "message"),
    [
        ("stdout?offset=-1", {}, "invalid offset '-1'"),
        ("stdout?limit=x", {}, "invalid limit 'x'"),
        ("stdout?offset=1&offset=2", {}, "parameter 'offset' is given more than once"),
        ("stdout", {"range": "bytes=1-2,4-5"}, "invalid Range header"),
        ("stdout", {"range": "lines=1-2"}, "invalid Range header"),
        ("stdout", {"range": "bytes=5-2"}, "invalid Range header"),
        ("stdout?offset=1", {"range": "bytes=1-2"}, "use either offset and limit"),
        ("stdout?follow=maybe", {}, "invalid follow 'maybe'"),
        ("stdout?follow=true&limit=3", {}, "follow=true takes an offset"),
        ("stdin", {}, "invalid stream 'stdin'"),
    ],
)
def test_raw_bad_request_names_the_value(user, path, headers, message):
    job_id = finished(user, "echo x")

    response = user.get(f"/output/{job_id}/{path}", headers=headers)

    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


def test_raw_output_of_other_users_job_is_not_found(alps_server: AlpsServer, user):
    job_id = finished(user, "echo secret")
    with alps_server.client("other") as other:
        response = other.get(f"/output/{job_id}/stdout")

    assert response.status_code == 404
    assert response.json() == NOT_FOUND


def test_json_output_past_cap_returns_the_tail(make_server):
    server = make_server(output_json_max=1000)
    with server.client("user") as client:
        job_id = finished(client, "head -c 2500 /dev/zero | tr '\\0' a; printf END")

        body = client.get(f"/output/{job_id}").json()

    tail = base64.b64decode(body["stdoutBytes"])
    assert body["stdoutSize"] == 2503
    assert body["stdoutOffset"] == 1503
    assert len(tail) == 1000
    assert tail.endswith(b"END")
    assert "stderrOffset" not in body


def test_raw_window_of_large_output(user):
    job_id = finished(
        user, "head -c 20000000 /dev/urandom | od -An -v -tx1 | head -c 30000000"
    )
    whole = user.get(f"/output/{job_id}/stdout").content

    window = user.get(
        f"/output/{job_id}/stdout", params={"offset": 4_000_000, "limit": 9_000_000}
    )

    assert len(whole) == 30_000_000
    assert window.content == whole[4_000_000:13_000_000]


# Follow -----------------------------------------------------------------------------


def follow_lines(
    server: AlpsServer, job_id: int, stream: str = "stdout"
) -> tuple[list[tuple[float, bytes]], float]:
    """Follow a stream; return each line with when it came, and when it ended."""
    lines = []
    with (
        server.client("user") as client,
        client.stream(
            "GET", f"/output/{job_id}/{stream}", params={"follow": "true"}
        ) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            lines.append((time.monotonic(), line.encode()))
    return lines, time.monotonic()


def test_follow_gives_lines_as_they_come(alps_server: AlpsServer, user):
    job_id = start(user, "echo a; sleep 2; echo b; sleep 2; echo c")

    lines, ended = follow_lines(alps_server, job_id)

    assert [line for _, line in lines] == [b"a", b"b", b"c"]
    assert lines[1][0] - lines[0][0] > 1.5
    assert lines[2][0] - lines[1][0] > 1.5
    stopped = wait_stopped(user, job_id)
    assert stopped["jobStatus"] == "stopped"
    assert ended - lines[2][0] < 1.0


def test_follow_shows_stdout_while_stderr_is_silent(alps_server: AlpsServer, user):
    job_id = start(user, "echo out; sleep 3")
    started = time.monotonic()
    first_line = []

    def read_first() -> None:
        with (
            alps_server.client("user") as client,
            client.stream(
                "GET", f"/output/{job_id}/stdout", params={"follow": "true"}
            ) as response,
        ):
            for line in response.iter_lines():
                first_line.append((time.monotonic(), line))
                break

    reader = threading.Thread(target=read_first)
    reader.start()
    reader.join(timeout=10)

    assert first_line[0][1] == "out"
    assert first_line[0][0] - started < 2.0
    assert user.get(f"/status/{job_id}").json()["jobStatus"] == "running"
    user.post(f"/stop/{job_id}")


def test_follow_ends_within_a_second_of_stop(alps_server: AlpsServer, user):
    job_id = start(user, "echo going; sleep 60")
    result = {}

    def follow() -> None:
        result["lines"], result["ended"] = follow_lines(alps_server, job_id)

    reader = threading.Thread(target=follow)
    reader.start()
    wait_until(lambda: user.get(f"/output/{job_id}").json()["stdoutSize"] > 0)
    time.sleep(0.3)
    user.post(f"/stop/{job_id}")
    stopped_at = time.monotonic()
    reader.join(timeout=10)

    assert [line for _, line in result["lines"]] == [b"going"]
    assert result["ended"] - stopped_at < 1.0


def test_follow_of_stopped_job_returns_everything(alps_server: AlpsServer, user):
    job_id = finished(user, "seq 1 5")

    lines, _ = follow_lines(alps_server, job_id)

    assert [line for _, line in lines] == [b"1", b"2", b"3", b"4", b"5"]


def test_follow_before_first_byte(alps_server: AlpsServer, user):
    job_id = start(user, "sleep 1; echo late")

    lines, _ = follow_lines(alps_server, job_id)

    assert [line for _, line in lines] == [b"late"]


def test_follow_from_an_offset(alps_server: AlpsServer, user):
    job_id = finished(user, "printf abcdef")
    with alps_server.client("user") as client:
        response = client.get(
            f"/output/{job_id}/stdout", params={"follow": "true", "offset": 2}
        )

    assert response.content == b"cdef"


def test_many_followers_get_the_same_bytes(alps_server: AlpsServer, user):
    job_id = start(user, "for i in $(seq 1 30); do echo line $i; sleep 0.05; done")
    results: list[bytes] = []

    def follow() -> None:
        with alps_server.client("user") as client:
            results.append(
                client.get(
                    f"/output/{job_id}/stdout", params={"follow": "true"}
                ).content
            )

    threads = [threading.Thread(target=follow) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    expected = b"".join(f"line {i}\n".encode() for i in range(1, 31))
    assert len(results) == 20
    assert all(result == expected for result in results)


def test_readers_at_different_offsets_get_exact_bytes(alps_server: AlpsServer, user):
    job_id = start(
        user, "for i in $(seq 1 200); do printf '%05d' $i; sleep 0.005; done"
    )
    expected = b"".join(b"%05d" % i for i in range(1, 201))
    results: dict[int, bytes] = {}

    def follow(offset: int) -> None:
        with alps_server.client("user") as client:
            results[offset] = client.get(
                f"/output/{job_id}/stdout",
                params={"follow": "true", "offset": offset},
            ).content

    offsets = [0, 1, 7, 50, 123, 400, 555, 800, 999, 1000]
    threads = [threading.Thread(target=follow, args=(offset,)) for offset in offsets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    for offset in offsets:
        assert results[offset] == expected[offset:], offset


def test_slow_follower_keeps_api_memory_bounded(alps_server: AlpsServer, user):
    api_pid = alps_server.processes["api"].pid
    job_id = start(user, "head -c 200000000 /dev/zero")
    received = 0
    peak = 0
    with (
        alps_server.client("user") as client,
        client.stream(
            "GET", f"/output/{job_id}/stdout", params={"follow": "true"}
        ) as response,
    ):
        for chunk in response.iter_bytes(1 << 20):
            received += len(chunk)
            if received % (8 << 20) < (1 << 20):
                time.sleep(0.05)  # read slowly now and then
                peak = max(peak, resident_mib(api_pid))

    assert received == 200_000_000
    assert peak < 150


def test_quiet_job_keeps_its_follower(make_server):
    server = make_server(stop_grace="1s", api_settings={"response_timeout": "3s"})
    with server.client("user") as client:
        job_id = start(client, "sleep 5; echo done")

        response = client.get(
            f"/output/{job_id}/stdout", params={"follow": "true"}, timeout=20
        )

    assert response.status_code == 200
    assert response.content == b"done\n"


def test_abandoned_followers_free_their_resources(alps_server: AlpsServer, user):
    worker_pid = alps_server.processes["worker"].pid
    job_id = start(user, "echo hi; sleep 120")
    try:
        hang_up_followers(alps_server, job_id, count=10)
        time.sleep(0.5)
        before = (thread_count(worker_pid), fd_count(worker_pid))

        hang_up_followers(alps_server, job_id, count=200)
        after = wait_until(
            lambda: (
                (thread_count(worker_pid), fd_count(worker_pid))
                if thread_count(worker_pid) <= before[0]
                and fd_count(worker_pid) <= before[1]
                else None
            ),
            timeout=10,
        )

        assert after[0] <= before[0]
        assert after[1] <= before[1]
    finally:
        user.post(f"/stop/{job_id}")


def hang_up_followers(server: AlpsServer, job_id: int, count: int) -> None:
    """Open ``count`` follows, read their first bytes, then drop the connections."""
    clients = [server.client("user") for _ in range(count)]
    streams = []
    try:
        for client in clients:
            stream = client.stream(
                "GET", f"/output/{job_id}/stdout", params={"follow": "true"}
            )
            response = stream.__enter__()
            next(response.iter_raw())
            streams.append(stream)
    finally:
        for client in clients:
            client.close()


def resident_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_follow_sends_headers_before_the_first_byte(alps_server: AlpsServer, user):
    job_id = start(user, "sleep 3; echo late")
    started = time.monotonic()
    with (
        alps_server.client("user") as client,
        client.stream(
            "GET", f"/output/{job_id}/stdout", params={"follow": "true"}
        ) as response,
    ):
        headers_at = time.monotonic()
        body = response.read()

    assert response.status_code == 200
    assert headers_at - started < 1.5
    assert body == b"late\n"


def test_two_streams_followed_at_once_stay_live(alps_server: AlpsServer, user):
    # A quiet stderr follower must not hold up the stdout one: each wait of a
    # follower has to reach the worker even while another wait is under way.
    job_id = start(user, "echo a; sleep 1; echo b; sleep 1; echo c; sleep 1")
    results: dict[str, tuple] = {}

    def follow(stream: str) -> None:
        results[stream] = follow_lines(alps_server, job_id, stream)

    threads = [threading.Thread(target=follow, args=(s,)) for s in ("stdout", "stderr")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    lines, _ = results["stdout"]
    assert [line for _, line in lines] == [b"a", b"b", b"c"]
    assert lines[1][0] - lines[0][0] > 0.7
    assert lines[2][0] - lines[1][0] > 0.7
    assert results["stderr"][0] == []
