"""The job engine under stress: whole-tree stops, limits, bulk jobs, huge output,
restarts, retention and races, each through the real worker and API."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from alps.ipc import WorkerClient

from helpers import AlpsServer, process_alive, wait_stopped, wait_until

USER = ("user@example.com", "user")
ADMIN = ("admin@example.com", "admin")
NOT_FOUND = {"status": 404, "error": "no job found with that ID"}
FORK_LOOP = (
    "trap '' TERM; while :; do (trap '' TERM; exec sleep 1234) & sleep 0.05; done"
)
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="cgroups need root")


def start(client: httpx.Client, command: str, **extra) -> int:
    response = client.post("/start", json={"job": command, **extra})
    assert response.status_code == 200, response.text
    return response.json()["jobID"]


def pids_of(command_line: str) -> list[int]:
    """Return the PIDs of processes whose whole command line is ``command_line``."""
    result = subprocess.run(
        ["pgrep", "-fx", command_line], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in result.stdout.split()]


def job_cgroups(server: AlpsServer, job_id: int) -> list[Path]:
    """Return the cgroup folders that ``server``'s worker made for a job."""
    tag = "alps-" + hashlib.sha256(str(server.state_dir).encode()).hexdigest()[:8]
    return list(Path("/sys/fs/cgroup").glob(f"**/{tag}/job-{job_id}"))


@pytest.fixture(
    params=[
        pytest.param("v1", marks=needs_root),
        pytest.param("v2", marks=needs_root),
        "off",
    ]
)
def cgroup_server(request, make_server) -> AlpsServer:
    """A server whose jobs use cgroup v1, cgroup v2, or only their process tree."""
    v2_mounted = (
        Path("/sys/fs/cgroup/unified").is_dir()
        or Path("/sys/fs/cgroup/cgroup.controllers").exists()
    )
    if request.param == "v2" and not v2_mounted:
        pytest.skip("no cgroup v2 hierarchy on this host")
    return make_server(cgroups=request.param, stop_grace="1s")


# Whole tree stops --------------------------------------------------------------------


def test_stop_leaves_no_process_of_the_job(cgroup_server: AlpsServer):
    marker = f"sleep 9{random.randrange(10**6):06d}"
    with cgroup_server.client("user") as client:
        job_id = start(client, f"setsid {marker} & {marker}; wait")
        wait_until(lambda: len(pids_of(marker)) == 2)

        client.post(f"/stop/{job_id}")

        assert pids_of(marker) == []
        assert job_cgroups(cgroup_server, job_id) == []


def test_stop_ends_a_forking_job_that_ignores_term(cgroup_server: AlpsServer):
    with cgroup_server.client("user") as client:
        job_id = start(client, FORK_LOOP.replace("1234", "1234.5"))
        wait_until(lambda: len(pids_of("sleep 1234.5")) >= 3)

        stopped = client.post(f"/stop/{job_id}").json()
        gone_at = time.monotonic()

        assert stopped["signal"] == "SIGKILL"
        assert stopped["exitCode"] == 137
        assert pids_of("sleep 1234.5") == []
        assert time.monotonic() - gone_at < 1


def test_leftovers_are_stopped_when_the_shell_exits(cgroup_server: AlpsServer):
    with cgroup_server.client("user") as client:
        job_id = start(client, "setsid sleep 876 & echo left")

        body = wait_stopped(client, job_id)

        assert body["exitCode"] == 0
        assert pids_of("sleep 876") == []


@needs_root
def test_worker_logs_when_cgroups_are_off(make_server):
    server = make_server(cgroups="off")

    assert "cgroups unavailable" in server.log("worker")
    assert "jobs are stopped through their process group" in server.log("worker")


# Grace and exit reporting ------------------------------------------------------------


def test_stop_of_an_ending_job_is_not_an_error(alps_server: AlpsServer):
    with alps_server.client("user") as client:
        job_id = start(client, "trap 'sleep 1; exit 0' TERM; sleep 100 & wait")
        time.sleep(0.2)
        results: list[httpx.Response] = []

        def stop() -> None:
            with alps_server.client("user") as own:
                results.append(own.post(f"/stop/{job_id}"))

        threads = [threading.Thread(target=stop) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)

    assert [response.status_code for response in results] == [200, 200, 200]
    assert {response.json()["exitCode"] for response in results} == {0}


@needs_root
def test_memory_limit_kill_gives_a_reason(alps_server: AlpsServer):
    with alps_server.client("user") as client:
        job_id = start(
            client,
            "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived",
            limits={"memory": "64M"},
        )

        body = wait_stopped(client, job_id, timeout=30)

        assert body["exitCode"] != 0
        assert "memory limit" in body["reason"]
        assert body["limits"]["memory"] == 64 * 1024 * 1024


# Limits ------------------------------------------------------------------------------


@needs_root
def test_pids_limit_stops_forks(alps_server: AlpsServer):
    with alps_server.client("user") as client:
        job_id = start(
            client,
            "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait",
            limits={"pids": 4},
        )

        body = wait_stopped(client, job_id, timeout=20)
        stderr = client.get(f"/output/{job_id}/stderr").content

    assert body["limits"]["pids"] == 4
    assert b"fork" in stderr.lower()


@needs_root
def test_cpu_limit_is_written_to_the_cgroup(alps_server: AlpsServer):
    with alps_server.client("user") as client:
        job_id = start(client, "echo running; sleep 30", limits={"cpu": 0.25})
        try:
            # The limits are written before the command runs.
            wait_until(lambda: client.get(f"/output/{job_id}/stdout").content)
            folder = next(
                path
                for path in job_cgroups(alps_server, job_id)
                if path.parts[4] == "cpu"
            )

            quota = folder / "cpu.cfs_quota_us"

            assert quota.read_text().strip() == "25000"
        finally:
            client.post(f"/stop/{job_id}")


@needs_root
def test_default_limits_apply_to_every_job(make_server):
    server = make_server(limits={"memory": "512M", "pids": 100})
    with server.client("user") as client:
        job_id = start(client, "true")

        body = wait_stopped(client, job_id)

    assert body["limits"] == {"memory": 512 * 1024 * 1024, "pids": 100}


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"memory": "lots"}, "field 'limits.memory': invalid size \"lots\""),
        ({"memory": "10K"}, "field 'limits.memory': \"10K\" is below the minimum"),
        ({"memory": "100T"}, "field 'limits.memory': \"100T\" is more than this host"),
        ({"cpu": 0}, "field 'limits.cpu': 0 is out of range"),
        ({"cpu": "half"}, "field 'limits.cpu': invalid CPU count \"half\""),
        ({"pids": 0}, "field 'limits.pids': 0 is out of range"),
        ({"pids": 2.5}, "field 'limits.pids': invalid process count 2.5"),
        ({"disk": 1}, "field 'limits.disk' is not a limit"),
        ([1], "field 'limits' must be an object"),
    ],
)
def test_bad_limit_gets_400_naming_it(alps_server: AlpsServer, limits, message):
    with alps_server.client("user") as client:
        response = client.post("/start", json={"job": "true", "limits": limits})

    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


@needs_root
def test_user_cannot_raise_a_limit_past_the_ceiling(make_server):
    server = make_server(limits={"pids": 100}, max_limits={"pids": 200})
    with server.client("user") as user, server.client("admin") as admin:
        allowed = user.post("/start", json={"job": "true", "limits": {"pids": 200}})
        refused = user.post("/start", json={"job": "true", "limits": {"pids": 201}})
        raised = admin.post("/start", json={"job": "true", "limits": {"pids": 5000}})

    assert allowed.status_code == 200
    assert refused.status_code == 400
    assert refused.json()["error"] == (
        "field 'limits.pids': 201 is above the maximum of 200 for users"
    )
    assert raised.status_code == 200


def test_limits_without_cgroups_are_refused(make_server):
    server = make_server(cgroups="off")
    with server.client("user") as client:
        response = client.post("/start", json={"job": "true", "limits": {"pids": 5}})

    assert response.status_code == 400
    assert "cannot apply pids limits" in response.json()["error"]


# Bulk and isolation ------------------------------------------------------------------


def test_many_quick_jobs_all_succeed_and_leave_no_zombie(alps_server: AlpsServer):
    hub = WorkerClient(str(alps_server.socket_path))
    job_ids = []
    lock = threading.Lock()

    def start_many(count: int) -> None:
        own = WorkerClient(str(alps_server.socket_path))
        for _ in range(count):
            job_id = own.start(*USER, "true")["jobID"]
            with lock:
                job_ids.append(job_id)

    threads = [threading.Thread(target=start_many, args=(75,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(job_ids) == 300
    wait_until(
        lambda: all(
            hub.status(*USER, job_id)["jobStatus"] == "stopped" for job_id in job_ids
        ),
        timeout=60,
    )
    assert {hub.status(*USER, job_id)["exitCode"] for job_id in job_ids} == {0}
    worker_pid = alps_server.processes["worker"].pid
    wait_until(lambda: zombies_below(worker_pid) == [], timeout=5)


def zombies_below(ancestor: int) -> list[int]:
    """Return the zombie processes among the descendants of ``ancestor``."""
    parents: dict[int, int] = {}
    states: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        states[int(entry.name)] = fields[0]
        parents[int(entry.name)] = int(fields[1])

    def descends(pid: int) -> bool:
        for _ in range(64):
            pid = parents.get(pid, 0)
            if pid == ancestor:
                return True
            if pid <= 1:
                return False
        return False

    return [pid for pid, state in states.items() if state == "Z" and descends(pid)]


def test_one_job_end_does_not_wait_for_another(alps_server: AlpsServer):
    with alps_server.client("user") as client:
        slow = start(client, "sleep 30")
        try:
            started = time.monotonic()
            quick = start(client, "echo quick")

            wait_stopped(client, quick)

            assert time.monotonic() - started < 3
        finally:
            client.post(f"/stop/{slow}")


# Huge output and a full disk ---------------------------------------------------------


def test_gigabyte_of_output_keeps_memory_low(alps_server: AlpsServer):
    pids = {name: alps_server.processes[name].pid for name in ("worker", "api")}
    peaks = {name: 0.0 for name in pids}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for name, pid in pids.items():
                peaks[name] = max(peaks[name], resident_mib(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with alps_server.client("user") as client:
            job_id = start(client, "head -c 1073741824 /dev/zero; printf LAST")
            body = wait_stopped(client, job_id, timeout=120)
            tail = client.get(f"/output/{job_id}/stdout", headers={"range": "bytes=-8"})
            received = 0
            with client.stream("GET", f"/output/{job_id}/stdout") as response:
                for chunk in response.iter_bytes(1 << 20):
                    received += len(chunk)
    finally:
        done.set()
        sampler.join()

    stdout = alps_server.state_dir / "jobs" / str(job_id) / "stdout"
    assert body["exitCode"] == 0
    assert stdout.stat().st_size == 1073741824 + 4
    assert tail.content == b"\0\0\0\0LAST"
    assert received == 1073741824 + 4
    print(f"peak resident memory: {peaks}")
    assert peaks["worker"] < 150
    assert peaks["api"] < 150


def resident_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


@needs_root
def test_full_disk_ends_the_job_and_keeps_the_worker(tmp_path_factory, pki):
    from helpers import running_server

    folder = tmp_path_factory.mktemp("alps")
    jobs = folder / "state" / "jobs"
    jobs.mkdir(parents=True, mode=0o700)
    (folder / "state").chmod(0o700)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=700", "tmpfs", str(jobs)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with running_server(folder, pki) as server, server.client("user") as client:
            job_id = start(client, "head -c 10000000 /dev/zero; sleep 30")

            body = wait_stopped(client, job_id, timeout=20)

            assert "No space left on device" in body["reason"]
            assert body["exitCode"] != 0
            assert WorkerClient(str(server.socket_path)).ping()["pid"] > 0
            assert pids_of("head -c 10000000 /dev/zero") == []
    finally:
        subprocess.run(["umount", "-l", str(jobs)], check=False)


# Restarts ----------------------------------------------------------------------------


def test_worker_killed_while_job_runs_reattaches(make_server):
    server = make_server(keep_jobs_on_exit=True)
    hub = WorkerClient(str(server.socket_path))
    done = hub.start(*USER, "echo done")["jobID"]
    running = hub.start(*USER, "echo start; sleep 2; echo end")["jobID"]
    wait_until(lambda: hub.status(*USER, done)["jobStatus"] == "stopped")

    server.stop_service("worker", signal.SIGKILL)
    server.start_worker()
    newer = hub.start(*USER, "true")["jobID"]

    assert newer > running
    assert hub.status(*USER, running)["jobStatus"] == "running"
    final = wait_until(
        lambda: (o := hub.output(*USER, running))["jobStatus"] == "stopped" and o
    )
    assert final["exitCode"] == 0
    assert final["stdoutBytes"] == b"start\nend\n"
    assert hub.output(*USER, done)["stdoutBytes"] == b"done\n"


def test_reattached_job_can_be_stopped(make_server):
    server = make_server(keep_jobs_on_exit=True)
    hub = WorkerClient(str(server.socket_path))
    job_id = hub.start(*USER, "sleep 543")["jobID"]
    wait_until(lambda: pids_of("sleep 543"))

    server.stop_service("worker")
    server.start_worker()
    stopped = hub.stop(*USER, job_id)

    assert stopped["exitCode"] == 143
    assert stopped["signal"] == "SIGTERM"
    assert pids_of("sleep 543") == []


def test_job_whose_supervisor_dies_is_reported_stopped(alps_server: AlpsServer):
    hub = WorkerClient(str(alps_server.socket_path))
    job_id = hub.start(*USER, "sleep 432")["jobID"]
    pids_file = alps_server.state_dir / "jobs" / str(job_id) / "supervisor.json"
    supervisor = wait_until(lambda: read_json(pids_file))["pid"]

    os.kill(supervisor, signal.SIGKILL)
    body = wait_until(
        lambda: (s := hub.status(*USER, job_id))["jobStatus"] == "stopped" and s
    )

    assert "supervisor ended without a record" in body["reason"]
    assert body["exitCode"] is None
    assert pids_of("sleep 432") == []


def test_worker_stop_without_keep_stops_jobs(make_server):
    server = make_server(keep_jobs_on_exit=False)
    hub = WorkerClient(str(server.socket_path))
    job_id = hub.start(*USER, "sleep 321")["jobID"]
    wait_until(lambda: pids_of("sleep 321"))

    server.stop_service("worker")
    server.start_worker()

    body = hub.status(*USER, job_id)
    assert pids_of("sleep 321") == []
    assert body["exitCode"] == 143
    assert body["reason"] == "stopped because the worker shut down"


def read_json(path: Path) -> dict | None:
    import json

    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return None


# Retention ---------------------------------------------------------------------------


def test_expired_job_is_gone_on_every_path(make_server):
    server = make_server(retention="1s")
    with server.client("user") as user, server.client("admin") as admin:
        job_id = start(user, "echo bye")
        wait_stopped(user, job_id)
        time.sleep(1.2)

        responses = [
            user.get(f"/status/{job_id}"),
            user.get(f"/output/{job_id}"),
            user.get(f"/output/{job_id}/stdout"),
            user.get(f"/output/{job_id}/stderr", params={"follow": "true"}),
            user.post(f"/stop/{job_id}"),
            admin.post(f"/take/{job_id}"),
        ]
        listed = [job["jobID"] for job in user.get("/list").json()["jobs"]]

    for response in responses:
        assert response.status_code == 404, response.request.url
        assert response.json() == NOT_FOUND
    assert job_id not in listed


def test_pruning_continues_after_restart(make_server):
    server = make_server(retention="2s")
    hub = WorkerClient(str(server.socket_path))
    job_id = hub.start(*USER, "true")["jobID"]
    wait_until(lambda: hub.status(*USER, job_id)["jobStatus"] == "stopped")
    folder = server.state_dir / "jobs" / str(job_id)

    server.stop_service("worker")
    time.sleep(2.2)
    server.start_worker()

    wait_until(lambda: not folder.exists(), timeout=5)
    assert f"job pruned id={job_id}" in server.log("worker")


# Races -------------------------------------------------------------------------------


def test_concurrent_start_stop_take_read(make_server):
    server = make_server(stop_grace="1s")
    socket_path = str(server.socket_path)
    started: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    expected = (
        "JobNotFound",
        "Forbidden",
    )

    def starter() -> None:
        hub = WorkerClient(socket_path)
        for round_number in range(40):
            command = "sleep 0.3" if round_number % 2 else "echo hi"
            job_id = hub.start(*USER, command)["jobID"]
            with lock:
                started.append(job_id)

    def meddler(caller: tuple[str, str]) -> None:
        hub = WorkerClient(socket_path)
        chooser = random.Random(caller[0])
        for _ in range(120):
            with lock:
                if not started:
                    continue
                job_id = chooser.choice(started)
            action = chooser.choice(["stop", "status", "output", "take", "list"])
            try:
                if action == "list":
                    hub.list(*caller)
                elif action == "take":
                    hub.take(*caller, job_id)
                else:
                    getattr(hub, action)(*caller, job_id)
            except Exception as error:  # collected and checked below
                if type(error).__name__ not in expected:
                    errors.append(error)

    threads = [threading.Thread(target=starter) for _ in range(2)]
    threads += [threading.Thread(target=meddler, args=(USER,)) for _ in range(2)]
    threads += [threading.Thread(target=meddler, args=(ADMIN,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    hub = WorkerClient(socket_path)
    jobs = {job["jobID"]: job for job in hub.list(*ADMIN, True)}
    assert set(started) <= set(jobs)
    wait_until(
        lambda: all(
            hub.status(*ADMIN, job_id)["jobStatus"] == "stopped" for job_id in started
        ),
        timeout=30,
    )
    for job_id in started:
        body = hub.status(*ADMIN, job_id)
        assert body["exitCode"] in (0, 143), body
        assert job_cgroups(server, job_id) == []
    assert pids_of("sleep 0.3") == []
    assert all(process_alive(server.processes[name].pid) for name in ("worker", "api"))


@needs_root
def test_stop_ends_even_if_a_process_escaped_the_group(make_server):
    # Only a root job can leave its group; it then keeps the output pipe open,
    # and the job must still end instead of staying "running" for good.
    server = make_server(default_run_as="root", stop_grace="1s")
    tag = "alps-" + hashlib.sha256(str(server.state_dir).encode()).hexdigest()[:8]
    escape = Path("/sys/fs/cgroup/freezer") / tag / "escape"
    escape.mkdir()
    marker = f"sleep 7{random.randrange(10**6):06d}"
    job_id = None
    try:
        with server.client("user") as client:
            job_id = start(
                client,
                f"sh -c 'echo $$ > {escape}/cgroup.procs; exec {marker}' & sleep 1000",
            )
            wait_until(lambda: pids_of(marker))

            stopped = client.post(f"/stop/{job_id}")

        assert stopped.status_code == 200
        assert stopped.json()["jobStatus"] == "stopped"
        assert "still held its output" in stopped.json()["reason"]
    finally:
        for pid in pids_of(marker):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not (escape / "cgroup.procs").read_text().strip())
        escape.rmdir()
        # The escaped process stayed in the job's other groups until now, so
        # the supervisor could not remove them.
        for folder in [] if job_id is None else job_cgroups(server, job_id):
            wait_until(lambda folder=folder: _removed(folder))


def _removed(folder: Path) -> bool:
    try:
        folder.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
