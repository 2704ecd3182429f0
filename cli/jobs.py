"""The job commands: ``start``, ``stop``, ``status``, ``output``, ``list``, ``take``.

Each sends one API call and prints the reply for a person, or, with ``--json``,
prints the API's JSON body.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from alps.cli import display
from alps.cli.config import load_config, require_complete
from alps.cli.errors import CommandError
from alps.client import STREAMS, ApiClient
from alps.durations import format_duration
from alps.timefmt import parse_rfc3339


def connect() -> ApiClient:
    """Open a client with the settings of the config file, once they are complete."""
    return client_factory()()


def client_factory() -> Callable[[], ApiClient]:
    """Read and check the config file, and return a function that opens clients."""
    config = load_config()
    require_complete(config)
    address, ca, cert, key = config.address, config.ca, config.cert, config.key
    assert address and ca and cert and key

    def open_client() -> ApiClient:
        return ApiClient(address, ca, cert, key)

    return open_client


def print_json(body: dict[str, Any]) -> None:
    print(json.dumps(body, indent=2, ensure_ascii=False))


def run_start(args: argparse.Namespace) -> int:
    command = " ".join(args.command)
    if not command.strip():
        raise CommandError("the command is empty; give one, such as: alps start 'ls'")
    with connect() as client:
        body = client.start(command, _requested_limits(args))
    if args.json:
        print_json(body)
    else:
        owner = display.printable(body.get("owner"))
        print(f"Started Job {body.get('jobID')} for {owner}")
    return 0


def _requested_limits(args: argparse.Namespace) -> dict[str, Any]:
    """Return the start request's ``limits`` from --memory, --cpu and --pids.

    The API checks the values against the allowed range and the ceiling for
    users, and its 400 reply names a bad one.
    """
    limits: dict[str, Any] = {}
    if args.memory is not None:
        memory = args.memory.strip()
        limits["memory"] = int(memory) if memory.isdigit() else memory
    if args.cpu is not None:
        limits["cpu"] = args.cpu
    if args.pids is not None:
        limits["pids"] = args.pids
    return limits


def run_stop(args: argparse.Namespace) -> int:
    with connect() as client:
        body = client.stop(args.id)
    if args.json:
        print_json(body)
    else:
        print(f"Stopped Job {body.get('jobID')}.{_retention_sentence(body)}")
    return 0


def _retention_sentence(body: dict[str, Any]) -> str:
    try:
        stop_time = parse_rfc3339(body["stopTime"])
        expires = parse_rfc3339(body["outputExpires"])
    except (KeyError, TypeError, ValueError):
        return ""
    seconds = max((expires - stop_time).total_seconds(), 0)
    return f" Output will be available for {format_duration(seconds)}."


def run_status(args: argparse.Namespace) -> int:
    with connect() as client:
        body = client.status(args.id)
    if args.json:
        print_json(body)
    else:
        print("\n".join(display.status_lines(body)))
    return 0


def run_output(args: argparse.Namespace) -> int:
    if args.follow or args.tail is not None:
        return _copy_output(args)
    with connect() as client:
        if args.json:
            print_json(client.output(args.id, decode=False))
            return 0
        body = client.output(args.id)
        targets = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}
        for stream in STREAMS:
            target = targets[stream]
            # The JSON reply contains only the end of a large stream, from
            # byte stdoutOffset or stderrOffset on; the raw endpoint sends
            # the part before it.
            head_size = body.get(f"{stream}Offset") or 0
            if head_size:
                for chunk in client.read_stream(args.id, stream, 0, head_size):
                    target.write(chunk)
            target.write(body[f"{stream}Bytes"])
            target.flush()
    return 0


def _copy_output(args: argparse.Namespace) -> int:
    from alps.cli.follow import copy_output

    if args.json:
        raise CommandError(
            "--json cannot be combined with --follow or --tail; leave one out"
        )
    sys.stdout.flush()
    copy_output(client_factory(), args.id, follow=args.follow, tail=args.tail)
    return 0


def run_list(args: argparse.Namespace) -> int:
    with connect() as client:
        body = client.list(everyone=args.all)
    if args.json:
        print_json(body)
        return 0
    jobs = body.get("jobs") or []
    if not jobs:
        print("No jobs.")
        return 0
    table = display.job_table(jobs, display.output_width(), show_owner=args.all)
    print("\n".join(table))
    return 0


def run_take(args: argparse.Namespace) -> int:
    with connect() as client:
        body = client.take(args.id)
    if args.json:
        print_json(body)
    else:
        old_owner = display.printable(body.get("oldOwner"))
        owner = display.printable(body.get("owner"))
        print(
            f"Took Job {body.get('jobID')} from {old_owner}. Its owner is now {owner}."
        )
    return 0
