"""Benchmarks: ALPS next to the bare operations it wraps, measured in the same run.

Run with ``nox -s bench`` (or ``python tests/benchmark.py`` with ALPS installed).
It starts its own worker and API on loopback, in a temporary folder, prints one
table and writes the same figures as JSON (``bench-results/latest.json`` unless
``--out`` says otherwise). Every target is a ratio against a baseline taken in the
same run, or an absolute bound where no baseline applies, because absolute times
on a shared machine say little.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import tomli_w

from alps import certs
from alps.client import ApiClient
from alps.ipc import WorkerClient

MIB = 1 << 20


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None

    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        assert self.baseline is not None
        return self.value / self.baseline


# The server --------------------------------------------------------------------------


@dataclass
class Server:
    folder: Path
    address: str
    worker: subprocess.Popen
    api: subprocess.Popen

    def client(self, name: str = "user") -> ApiClient:
        return ApiClient(
            self.address,
            self.folder / "ca.crt",
            self.folder / f"{name}.crt",
            self.folder / f"{name}.key",
        )

    def cli_config(self, name: str = "user") -> Path:
        path = self.folder / f"{name}.toml"
        config = {
            "server": {"address": self.address, "ca": str(self.folder / "ca.crt")},
            "client": {
                "cert": str(self.folder / f"{name}.crt"),
                "key": str(self.folder / f"{name}.key"),
            },
        }
        path.write_text(tomli_w.dumps(config))
        return path


def script(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


@contextmanager
def running_server() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="alps-bench-") as temporary:
        folder = Path(temporary)
        folder.chmod(0o700)
        ca = certs.make_ca("ALPS bench CA")
        certs.write_cert(folder / "ca.crt", ca.cert)
        certs.issue_server(ca, ["127.0.0.1"]).write(
            folder / "server.crt", folder / "server.key"
        )
        for name in ("user", "admin"):
            certs.issue_client(ca, f"{name}@example.com").write(
                folder / f"{name}.crt", folder / f"{name}.key"
            )
        (folder / "acl.toml").write_text(
            tomli_w.dumps(
                {
                    "users": {
                        "user@example.com": {"role": "user"},
                        "admin@example.com": {"role": "admin"},
                    }
                }
            )
        )
        port = free_port()
        config = {
            "worker": {
                "socket": str(folder / "run" / "worker.sock"),
                "state_dir": str(folder / "state"),
                "retention": "1h",
                "stop_grace": "2s",
                "keep_jobs_on_exit": False,
            },
            "api": {
                "listen": f"127.0.0.1:{port}",
                "ca": "ca.crt",
                "cert": "server.crt",
                "key": "server.key",
                "acl": "acl.toml",
            },
        }
        (folder / "run").mkdir(mode=0o700)
        (folder / "server.toml").write_text(tomli_w.dumps(config))
        logs = open(folder / "services.log", "wb")  # noqa: SIM115 - closed below
        command = ["--config", str(folder / "server.toml")]
        worker = subprocess.Popen([script("alps-worker"), *command], stderr=logs)
        api = subprocess.Popen([script("alps-api"), *command], stderr=logs)
        server = Server(folder, f"127.0.0.1:{port}", worker, api)
        try:
            wait_ready(server)
            yield server
        finally:
            for process in (api, worker):
                process.send_signal(signal.SIGTERM)
            for process in (api, worker):
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
            logs.close()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + 30
    worker = WorkerClient(str(server.folder / "run" / "worker.sock"))
    while True:
        try:
            worker.ping()
            with server.client() as client:
                client.list()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# Measurements ------------------------------------------------------------------------


def timed(action: Callable[[], object], count: int) -> list[float]:
    """Return the duration of each of ``count`` calls, in seconds."""
    durations = []
    for _ in range(count):
        started = time.perf_counter()
        action()
        durations.append(time.perf_counter() - started)
    return durations


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def bare_spawn() -> None:
    subprocess.run(["/bin/sh", "-c", "true"], check=True)


def wait_stopped(client: ApiClient, job_id: int, pause: float = 0.0) -> dict:
    while True:
        body = client.status(job_id)
        if body["jobStatus"] == "stopped":
            return body
        if pause:
            time.sleep(pause)


def wait_idle(server: Server) -> None:
    """Wait until no job runs, so that one figure's jobs do not slow the next."""
    with server.client("admin") as client:
        while any(
            job["jobStatus"] == "running" for job in client.list(everyone=True)["jobs"]
        ):
            time.sleep(0.1)


def start_latency(server: Server, spawn_median: float, count: int) -> list[Figure]:
    with server.client() as client:
        timed(lambda: client.start("true"), 20)
        durations = timed(lambda: client.start("true"), count)
    median = statistics.median(durations)
    return [
        Figure(
            "POST /start latency, median",
            median * 1000,
            "ms",
            spawn_median * 1000,
            "sh -c true spawn + wait, median",
            "<= 2.5x baseline",
            median <= 2.5 * spawn_median,
        ),
        Figure(
            "POST /start latency, p99",
            percentile(durations, 0.99) * 1000,
            "ms",
            spawn_median * 1000,
            "sh -c true spawn + wait, median",
        ),
    ]


def start_to_stopped(server: Server, spawn_median: float, count: int) -> Figure:
    with server.client() as client:

        def one() -> None:
            wait_stopped(client, client.start("true")["jobID"])

        timed(one, 10)
        median = statistics.median(timed(one, count))
    return Figure(
        "POST /start to stopped, true, median",
        median * 1000,
        "ms",
        spawn_median * 1000,
        "sh -c true spawn + wait, median",
        "<= 4x baseline",
        median <= 4 * spawn_median,
    )


def _start_for(args: tuple[str, str, float]) -> int:
    folder, address, seconds = args
    client = ApiClient(
        address,
        Path(folder) / "ca.crt",
        Path(folder) / "user.crt",
        Path(folder) / "user.key",
    )
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        client.start("true")
        count += 1
    client.close()
    return count


def _cpu_seconds(pid: int, children: bool = False) -> float:
    """Return the CPU time a process used (with its reaped children), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_per_job(server: Server, count: int) -> list[Figure]:
    """Split the CPU time of a start-to-stop of ``true`` among the processes.

    Supervisors and jobs are children of the spawner, so their time shows in
    the spawner's reaped-children total once they have ended.
    """
    spawner = int(
        subprocess.run(
            ["pgrep", "-P", str(server.worker.pid)], capture_output=True, text=True
        ).stdout.split()[0]
    )
    processes = {
        "API": (server.api.pid, False),
        "worker": (server.worker.pid, False),
        "spawner": (spawner, False),
    }
    with server.client() as client:
        before = {name: _cpu_seconds(*where) for name, where in processes.items()}
        jobs_before = _cpu_seconds(spawner, True) - before["spawner"]
        client_before = time.process_time()
        for _ in range(count):
            client.start("true")
            time.sleep(0.01)  # one job at a time, without polling its status
        client_time = time.process_time() - client_before
    wait_idle(server)
    time.sleep(0.5)
    after = {name: _cpu_seconds(*where) for name, where in processes.items()}
    jobs_time = _cpu_seconds(spawner, True) - after["spawner"] - jobs_before
    spent = {name: after[name] - before[name] for name in processes}
    spent["supervisors and their jobs"] = jobs_time
    spent["benchmark client"] = client_time
    return [
        Figure(f"CPU per job: {name}", seconds / count * 1000, "ms")
        for name, seconds in spent.items()
    ]


def sustained_starts(server: Server, seconds: float) -> Figure:
    started = time.perf_counter()
    spawned = 0
    while time.perf_counter() - started < seconds:
        bare_spawn()
        spawned += 1
    bare_rate = spawned / (time.perf_counter() - started)

    work = [(str(server.folder), server.address, seconds)] * 8
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        began = time.perf_counter()
        counts = pool.map(_start_for, work)
        elapsed = time.perf_counter() - began
    # Each client ran for ``seconds``; the pool's own start-up is not counted.
    rate = sum(counts) / max(seconds, elapsed - 1.0)
    return Figure(
        "sustained starts per second, 8 clients",
        rate,
        "1/s",
        bare_rate,
        "bare spawns per second, serial",
        ">= 50% of baseline",
        rate >= 0.5 * bare_rate,
    )


def output_capture(server: Server, size: int, trials: int = 3) -> Figure:
    """Compare the rate of a job's captured output with writing a file directly.

    Each side is the median of ``trials`` runs, since one run of a fraction of a
    second depends on what the page cache is doing at the time.
    """
    scratch = server.folder / "state" / "bench.out"
    local_times = []
    for _ in range(trials):
        started = time.perf_counter()
        subprocess.run(f"head -c {size} /dev/zero > {scratch}", shell=True, check=True)
        local_times.append(time.perf_counter() - started)
        scratch.unlink()
    alps_times = []
    with server.client() as client:
        for _ in range(trials):
            started = time.perf_counter()
            job_id = client.start(f"head -c {size} /dev/zero")["jobID"]
            wait_stopped(client, job_id, pause=0.005)
            alps_times.append(time.perf_counter() - started)
    server.capture_job = job_id  # type: ignore[attr-defined]
    local = statistics.median(local_times)
    through_alps = statistics.median(alps_times)
    rate, local_rate = size / through_alps / MIB, size / local / MIB
    return Figure(
        f"output capture, {size // MIB} MiB job, median of {trials}",
        rate,
        "MiB/s",
        local_rate,
        f"head -c {size // MIB}M /dev/zero > file",
        ">= 80% of baseline",
        rate >= 0.8 * local_rate,
    )


def raw_fetch(server: Server, size: int) -> Figure:
    job_id = server.capture_job  # type: ignore[attr-defined]
    path = server.folder / "state" / "jobs" / str(job_id) / "stdout"
    started = time.perf_counter()
    with open(path, "rb") as file:
        while file.read(4 * MIB):
            pass
    local = time.perf_counter() - started
    with server.client() as client:
        started = time.perf_counter()
        received = sum(
            len(chunk)
            for chunk in client.read_stream(job_id, "stdout", chunk_size=4 * MIB)
        )
        fetched = time.perf_counter() - started
    assert received == size, received
    rate = size / fetched / MIB
    return Figure(
        f"raw output fetch, {size // MIB} MiB, Python client",
        rate,
        "MiB/s",
        size / local / MIB,
        "reading the file locally",
        ">= 300 MiB/s",
        rate >= 300,
    )


def resident_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fill_jobs(server: Server, total: int) -> int:
    """Start ``true`` jobs until the worker holds ``total``; wait for them all."""
    with server.client() as client:
        have = len(client.list()["jobs"])
        for _ in range(max(0, total - have)):
            last = client.start("true")["jobID"]
        if total > have:
            wait_stopped(client, last, pause=0.05)
        return len(client.list()["jobs"])


def memory_after_jobs(server: Server, jobs: int) -> list[Figure]:
    figures = []
    for name, process in (("worker", server.worker), ("API", server.api)):
        rss = resident_mib(process.pid)
        figures.append(
            Figure(
                f"{name} resident memory after {jobs} finished jobs",
                rss,
                "MiB",
                target="< 100 MiB",
                met=rss < 100,
            )
        )
    return figures


def memory_during_big_job(server: Server) -> list[Figure]:
    peaks = {"worker": 0.0, "API": 0.0}
    pids = {"worker": server.worker.pid, "API": server.api.pid}
    with server.client() as client:
        job_id = client.start("head -c 1073741824 /dev/zero")["jobID"]
        while client.status(job_id)["jobStatus"] == "running":
            for name, pid in pids.items():
                peaks[name] = max(peaks[name], resident_mib(pid))
            time.sleep(0.02)
    return [
        Figure(
            f"{name} resident memory during a 1 GiB job, peak",
            peak,
            "MiB",
            target="< 100 MiB",
            met=peak < 100,
        )
        for name, peak in peaks.items()
    ]


def list_latency(server: Server) -> float:
    with server.client("admin") as client:
        timed(client.list, 5)
        return statistics.median(timed(client.list, 50))


def cold_status(server: Server, job_id: int) -> Figure:
    environment = {**os.environ, "ALPS_CONFIG": str(server.cli_config("admin"))}
    python = statistics.median(
        timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), 15)
    )
    command = [script("alps"), "status", str(job_id)]
    status = statistics.median(
        timed(
            lambda: subprocess.run(
                command, env=environment, check=True, capture_output=True
            ),
            15,
        )
    )
    return Figure(
        "alps status, cold start, whole process",
        status * 1000,
        "ms",
        python * 1000,
        "python -c pass",
        "< 100 ms",
        status < 0.1,
    )


def task_spooler(spawn_median: float) -> list[Figure]:
    """Time task-spooler's enqueue and enqueue-to-done, where it is installed."""
    tsp = shutil.which("tsp") or shutil.which("ts")
    if tsp is None:
        return []
    enqueue = statistics.median(
        timed(lambda: subprocess.run([tsp, "true"], capture_output=True), 30)
    )

    def to_done() -> None:
        job = subprocess.run([tsp, "true"], capture_output=True, text=True).stdout
        subprocess.run([tsp, "-w", job.strip()], capture_output=True)

    done = statistics.median(timed(to_done, 30))
    return [
        Figure("peer: tsp enqueue, median", enqueue * 1000, "ms", spawn_median * 1000),
        Figure(
            "peer: tsp enqueue to done, median", done * 1000, "ms", spawn_median * 1000
        ),
    ]


# Report ------------------------------------------------------------------------------


def print_table(figures: list[Figure]) -> None:
    rows = [("figure", "ALPS", "baseline", "ratio", "target", "met")]
    for figure in figures:
        ratio = figure.ratio()
        rows.append(
            (
                figure.name,
                f"{figure.value:.2f} {figure.unit}",
                ""
                if figure.baseline is None
                else f"{figure.baseline:.2f} {figure.unit} ({figure.baseline_name})",
                "" if ratio is None else f"{ratio:.2f}x",
                figure.target,
                {None: "", True: "yes", False: "NO"}[figure.met],
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(6)]
    for index, row in enumerate(rows):
        print(
            "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            )
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-results/latest.json", help="JSON file")
    parser.add_argument(
        "--jobs", type=int, default=10_000, help="finished jobs for the memory figure"
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    figures: list[Figure] = []
    spawn_median = statistics.median(timed(bare_spawn, 300))
    with running_server() as server:
        figures += start_latency(server, spawn_median, 300)
        figures.append(start_to_stopped(server, spawn_median, 100))
        figures += cpu_per_job(server, 200)

        with server.client("admin") as admin:
            for _ in range(100):
                last = admin.start("true")["jobID"]
            wait_stopped(admin, last)
        few_others = list_latency(server)

        figures.append(sustained_starts(server, 5.0))
        wait_idle(server)
        figures.append(output_capture(server, 256 * MIB))
        figures.append(raw_fetch(server, 256 * MIB))
        jobs = fill_jobs(server, args.jobs)
        wait_idle(server)
        figures += memory_after_jobs(server, jobs)
        many_others = list_latency(server)
        figures.append(
            Figure(
                f"GET /list, 100 own jobs, {jobs} of another user",
                many_others * 1000,
                "ms",
                few_others * 1000,
                "same call with few other jobs",
                "< 10 ms, flat",
                many_others < 0.010 and many_others < 2 * few_others,
            )
        )
        figures += memory_during_big_job(server)
        wait_idle(server)
        figures.append(cold_status(server, last))
    figures += task_spooler(spawn_median)

    print_table(figures)
    report = {
        "machine": {
            "python": platform.python_version(),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
        },
        "seconds": round(time.monotonic() - started, 1),
        "figures": [asdict(figure) | {"ratio": figure.ratio()} for figure in figures],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out} in {report['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
