"""The HTTPS API against a real worker: every endpoint's body and every error row."""

from __future__ import annotations

import base64
import re
import time

import httpx
import pytest

from helpers import AlpsServer, wait_stopped, wait_until

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
NOT_FOUND = {"status": 404, "error": "no job found with that ID"}


@pytest.fixture
def user(alps_server: AlpsServer):
    with alps_server.client("user") as client:
        yield client


@pytest.fixture
def admin(alps_server: AlpsServer):
    with alps_server.client("admin") as client:
        yield client


@pytest.fixture
def other(alps_server: AlpsServer):
    with alps_server.client("other") as client:
        yield client


def start(client: httpx.Client, command: str) -> int:
    response = client.post("/start", json={"job": command})
    assert response.status_code == 200, response.text
    return response.json()["jobID"]


# Success bodies ------------------------------------------------------------------


def test_start_returns_id_owner_and_time(user):
    response = user.post("/start", json={"job": "true"})

    body = response.json()
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert set(body) == {"status", "jobID", "owner", "startTime"}
    assert body["status"] == 200
    assert isinstance(body["jobID"], int) and body["jobID"] > 0
    assert body["owner"] == "user@example.com"
    assert RFC3339_UTC.match(body["startTime"])


def test_job_ids_increase(user):
    first = start(user, "true")
    second = start(user, "true")

    assert second > first


def test_status_of_running_job(user):
    job_id = start(user, "sleep 30")
    try:
        body = user.get(f"/status/{job_id}").json()

        assert body["status"] == 200
        assert body["jobID"] == job_id
        assert body["job"] == "sleep 30"
        assert body["owner"] == "user@example.com"
        assert body["jobStatus"] == "running"
        assert "stopTime" not in body
        assert "exitCode" not in body
    finally:
        user.post(f"/stop/{job_id}")


def test_status_of_finished_job(user):
    job_id = start(user, "exit 3")

    body = wait_stopped(user, job_id)

    assert body["exitCode"] == 3
    assert "signal" not in body
    assert RFC3339_UTC.match(body["stopTime"])
    assert RFC3339_UTC.match(body["outputExpires"])
    assert body["stopTime"] >= body["startTime"]


def test_output_expires_one_retention_after_stop(user):
    from alps.timefmt import parse_rfc3339

    body = wait_stopped(user, start(user, "true"))

    retention = parse_rfc3339(body["outputExpires"]) - parse_rfc3339(body["stopTime"])
    assert retention.total_seconds() == pytest.approx(3600, abs=0.002)


def test_stop_returns_exit_status_and_signal(user):
    job_id = start(user, "sleep 100")

    response = user.post(f"/stop/{job_id}")

    body = response.json()
    assert response.status_code == 200
    assert body["jobID"] == job_id
    assert body["owner"] == "user@example.com"
    assert body["exitCode"] == 143
    assert body["signal"] == "SIGTERM"
    for field in ("startTime", "stopTime", "outputExpires"):
        assert RFC3339_UTC.match(body[field])


def test_stop_twice_is_not_an_error(user):
    job_id = start(user, "sleep 100")
    first = user.post(f"/stop/{job_id}").json()

    second = user.post(f"/stop/{job_id}")

    assert second.status_code == 200
    assert second.json()["stopTime"] == first["stopTime"]


def test_stop_of_finished_job_keeps_its_exit_code(user):
    job_id = start(user, "exit 5")
    wait_stopped(user, job_id)

    body = user.post(f"/stop/{job_id}").json()

    assert body["exitCode"] == 5


def test_output_is_split_and_base64(user):
    job_id = start(user, "echo hello; echo oops >&2; exit 3")
    wait_stopped(user, job_id)

    body = user.get(f"/output/{job_id}").json()

    assert body["status"] == 200
    assert body["jobStatus"] == "stopped"
    assert body["exitCode"] == 3
    assert base64.b64decode(body["stdoutBytes"]) == b"hello\n"
    assert base64.b64decode(body["stderrBytes"]) == b"oops\n"
    assert body["stdoutSize"] == 6
    assert body["stderrSize"] == 5


def test_output_keeps_invalid_utf8_bytes(user):
    job_id = start(user, r"printf '\210\377\n'; printf '\303' >&2")
    wait_stopped(user, job_id)

    body = user.get(f"/output/{job_id}").json()

    assert base64.b64decode(body["stdoutBytes"]) == b"\x88\xff\n"
    assert base64.b64decode(body["stderrBytes"]) == b"\xc3"


def test_output_of_running_job_grows(user):
    job_id = start(user, "echo one; sleep 30")
    try:
        body = wait_until(
            lambda: (b := user.get(f"/output/{job_id}").json())["stdoutSize"] and b
        )

        assert body["jobStatus"] == "running"
        assert base64.b64decode(body["stdoutBytes"]) == b"one\n"
    finally:
        user.post(f"/stop/{job_id}")


def test_list_shows_own_jobs_only(user, other):
    mine = start(user, "true")
    theirs = start(other, "true")

    response = user.get("/list")

    ids = [job["jobID"] for job in response.json()["jobs"]]
    assert response.status_code == 200
    assert mine in ids
    assert theirs not in ids


def test_list_entries_are_status_objects(user):
    job_id = start(user, "exit 4")
    wait_stopped(user, job_id)

    jobs = {job["jobID"]: job for job in user.get("/list").json()["jobs"]}

    assert jobs[job_id] == {
        key: value
        for key, value in user.get(f"/status/{job_id}").json().items()
        if key != "status"
    }


def test_take_moves_job_to_admin(user, admin):
    job_id = start(user, "true")

    response = admin.post(f"/take/{job_id}")

    assert response.status_code == 200
    assert response.json() == {
        "status": 200,
        "jobID": job_id,
        "owner": "admin@example.com",
        "oldOwner": "user@example.com",
    }
    assert user.get(f"/status/{job_id}").json() == NOT_FOUND
    assert admin.get(f"/status/{job_id}").json()["owner"] == "admin@example.com"
    assert job_id in [job["jobID"] for job in admin.get("/list").json()["jobs"]]
    assert job_id not in [job["jobID"] for job in user.get("/list").json()["jobs"]]


def test_admin_sees_and_stops_any_job(user, admin):
    job_id = start(user, "sleep 100")

    status = admin.get(f"/status/{job_id}")
    stopped = admin.post(f"/stop/{job_id}")

    assert status.json()["owner"] == "user@example.com"
    assert stopped.json()["exitCode"] == 143


# Error rows ----------------------------------------------------------------------


def test_unknown_identity_gets_401(alps_server: AlpsServer):
    with alps_server.client("stranger") as stranger:
        for method, path in (
            ("GET", "/list"),
            ("POST", "/start"),
            ("GET", "/status/1"),
            ("GET", "/no/such/route"),
        ):
            response = stranger.request(method, path, json={"job": "true"})

            assert response.status_code == 401, path
            assert response.json() == {
                "status": 401,
                "error": "you are not authorized to perform that action",
            }


def test_other_users_job_is_not_found(user, other):
    job_id = start(user, "true")

    for method, path in (
        ("GET", f"/status/{job_id}"),
        ("GET", f"/output/{job_id}"),
        ("POST", f"/stop/{job_id}"),
    ):
        response = other.request(method, path)

        assert response.status_code == 404, path
        assert response.json() == NOT_FOUND


def test_missing_job_is_not_found(user):
    response = user.get("/status/999999999")

    assert response.status_code == 404
    assert response.json() == NOT_FOUND


def test_take_by_user_is_forbidden(user, other):
    job_id = start(other, "true")

    response = user.post(f"/take/{job_id}")

    assert response.status_code == 403
    assert response.json() == {
        "status": 403,
        "error": "you are forbidden to take that job: not an admin",
    }


def test_take_of_missing_job_is_not_found(admin):
    response = admin.post("/take/999999999")

    assert response.json() == NOT_FOUND


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "request body is empty"),
        (b"{not json", "request body is not valid JSON"),
        (b"[1, 2]", "request body must be a JSON object"),
        (b"{}", "field 'job' is missing"),
        (b'{"job": ""}', "field 'job' must not be empty"),
        (b'{"job": "   "}', "field 'job' must not be empty"),
        (b'{"job": 42}', "field 'job' must be a string"),
        (b'{"job": null}', "field 'job' must be a string"),
        (b'{"job": "a\\u0000b"}', "field 'job' must not contain a NUL character"),
        (b'{"job": "true", "jbo": 1}', "unknown field 'jbo'"),
        (b"\xff\xfe", "request body is not valid JSON"),
    ],
)
def test_bad_start_body_gets_400(user, body, message):
    response = user.post(
        "/start", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["status"] == 400
    assert response.json()["error"].startswith(message)


@pytest.mark.parametrize(
    "job_id", ["abc", "0", "-1", "1.5", "99999999999999999999", "%C2%B2", "0x10"]
)
@pytest.mark.parametrize("path", ["/status/{}", "/output/{}", "/stop/{}", "/take/{}"])
def test_bad_job_id_gets_400(user, admin, path, job_id):
    client = admin if path.startswith("/take") else user
    method = "POST" if path.startswith(("/stop", "/take")) else "GET"

    response = client.request(method, path.format(job_id))

    assert response.status_code == 400
    assert response.json()["status"] == 400
    assert response.json()["error"].startswith("invalid job ID")


def test_unknown_route_gets_404(user):
    response = user.get("/jobs")

    assert response.status_code == 404
    assert response.json() == {"status": 404, "error": "no such endpoint: GET /jobs"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/start"), ("GET", "/stop/1"), ("POST", "/status/1"), ("DELETE", "/list")],
)
def test_wrong_method_gets_405(user, method, path):
    response = user.request(method, path)

    assert response.status_code == 405
    assert response.json()["status"] == 405
    assert method in response.json()["error"]


def test_oversized_body_gets_413(user):
    response = user.post("/start", json={"job": "x" * (2 * 1024 * 1024)})

    assert response.status_code == 413
    assert response.json()["status"] == 413


def test_unexpected_failure_gets_500_without_trace(alps_server: AlpsServer, user):
    job_id = start(user, "echo fine")
    wait_stopped(user, job_id)
    stdout = alps_server.state_dir / "jobs" / str(job_id) / "stdout"
    stdout.unlink()
    stdout.mkdir()  # output that cannot be read as a file

    response = user.get(f"/output/{job_id}")

    assert response.status_code == 500
    assert response.json()["status"] == 500
    assert "Traceback" not in response.text
    assert "IsADirectoryError" not in response.text
    assert user.get(f"/status/{job_id}").status_code == 200


def test_worker_down_gets_503_then_recovers(make_server):
    server = make_server()
    with server.client("user") as client:
        assert client.get("/list").status_code == 200
        server.stop_service("worker")

        down = client.get("/list")

        assert down.status_code == 503
        assert down.json()["status"] == 503
        assert "worker is unavailable" in down.json()["error"]

        server.start_worker()
        back = client.get("/list")

        assert back.status_code == 200


def test_api_answers_while_worker_restarts(make_server):
    server = make_server(keep_jobs_on_exit=True)
    with server.client("user") as client:
        job_id = start(client, "sleep 30")
        server.stop_service("worker")
        server.start_worker()

        body = client.get(f"/status/{job_id}").json()

        assert body["jobStatus"] == "running"
        assert client.post(f"/stop/{job_id}").json()["exitCode"] == 143


def test_request_log_has_one_line_per_request(alps_server: AlpsServer, user):
    marker = f"/status/{int(time.time() * 1000)}"
    user.get(marker)

    lines = [line for line in alps_server.log("api").splitlines() if marker in line]

    assert len(lines) == 1
    assert "identity=user@example.com" in lines[0]
    assert "status=404" in lines[0]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/status/{}"), ("POST", "/stop/{}"), ("GET", "/output/{}/stdout")],
)
def test_id_of_thousands_of_digits_gets_400(user, method, path):
    response = user.request(method, path.format("7" * 5000))

    assert response.status_code == 400
    assert response.json()["error"].startswith("invalid job ID")


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"offset": "9" * 5000}, {}),
        ({"limit": "9" * 5000}, {}),
        ({}, {"range": "bytes=" + "9" * 5000 + "-"}),
        ({}, {"range": "bytes=-" + "9" * 5000}),
        ({}, {"range": "bytes=\u0660-\u0663"}),
        ({}, {"range": "b y t e s = 0 - 3"}),
    ],
)
def test_huge_or_odd_window_gets_400(user, params, headers):
    job_id = start(user, "echo window")
    wait_stopped(user, job_id)
    encoded = {name: value.encode() for name, value in headers.items()}

    response = user.get(f"/output/{job_id}/stdout", params=params, headers=encoded)

    assert response.status_code == 400
    assert response.json()["status"] == 400


def test_lone_surrogate_in_command_gets_400(alps_server: AlpsServer, user):
    response = user.post(
        "/start",
        content=b'{"job": "echo SECRET-IN-COMMAND \\ud800"}',
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 400
    assert "lone surrogate" in response.json()["error"]
    assert "SECRET-IN-COMMAND" not in alps_server.log("api")


def test_deeply_nested_body_gets_400(user):
    body = (
        b'{"job": "true", "limits": {"pids": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    )

    response = user.post(
        "/start", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert "nested too deep" in response.json()["error"]
