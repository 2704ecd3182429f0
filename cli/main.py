"""``alps``: the command-line client of the ALPS API.

Each command's module is imported only when that command runs, so that a quick
command such as ``alps status`` does not pay for ``alps dev``'s imports.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import signal
import sys
from collections.abc import Callable

from alps import __version__

EXIT_ERROR = 1
# A shell reports a process ended by a signal as 128 + the signal number.
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE

DESCRIPTION = """\
Run shell commands on an ALPS server and manage them: start a job, follow its
status, read its output, stop it. An admin may take over another user's job.

Set up once with 'alps config host', 'alps config ca' and 'alps config user',
or run 'alps dev' to start a local server with throwaway certificates."""

START_HELP = """\
Start a shell command as a new job; the server runs it with /bin/sh -c.

Give the command as one argument, quoted for your shell:
  alps start 'cd /var/log && ls -lh'
or as several words after '--', which are joined with spaces:
  alps start -- ls -l /tmp"""


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away, as in 'alps list | head -1'. Point stdout at
        # /dev/null so that the flush at exit does not fail a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def run(args: argparse.Namespace) -> int:
    """Run the command's handler and turn its errors into ``alps: error:`` lines."""
    from alps.cli.errors import CommandError
    from alps.client import ClientError

    module_name, function_name = args.handler.split(":")
    handler = getattr(importlib.import_module(module_name), function_name)
    try:
        return handler(args)
    except (CommandError, ClientError) as error:
        sys.stdout.flush()
        print(f"alps: error: {error.message}", file=sys.stderr)
        return EXIT_ERROR


def job_id(text: str) -> int:
    """Parse a job ID argument: a positive integer."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"invalid job ID {text!r}: expected a positive integer, such as 12"
        )
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alps",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"alps {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    commands.required = True
    _add_config(commands)
    _add_jobs(commands)
    _add_dashboard(commands)
    _add_dev(commands)
    return parser


def _add_config(commands: argparse._SubParsersAction) -> None:
    config = commands.add_parser(
        "config",
        help="set the server address, the CA and your certificate",
        description="Write the CLI's config file, created with mode 0600: "
        "$ALPS_CONFIG if set, else $XDG_CONFIG_HOME/alps/config.toml "
        "(~/.config/alps/config.toml). Without a subcommand, show the settings.",
    )
    config.set_defaults(handler="alps.cli.config:run_show")
    settings = config.add_subparsers(title="settings", metavar="SETTING")

    host = settings.add_parser(
        "host",
        help="set the API's address",
        description="Set the address of the ALPS API to connect to.",
    )
    host.add_argument("address", metavar="HOST:PORT", help="such as 127.0.0.1:8443")
    host.set_defaults(handler="alps.cli.config:run_host")

    ca = settings.add_parser(
        "ca",
        help="set the CA certificate that signed the server's certificate",
        description="Set the CA certificate (PEM) that the server's certificate "
        "must be signed by. The file must exist and be readable.",
    )
    ca.add_argument("file", metavar="FILE", help="CA certificate, PEM")
    ca.set_defaults(handler="alps.cli.config:run_ca")

    user = settings.add_parser(
        "user",
        help="set your client certificate and key",
        description="Set the client certificate and private key (PEM) that "
        "identify you to the server. Both files must exist, be readable, and "
        "belong together.",
    )
    user.add_argument("cert", metavar="CERT", help="client certificate, PEM")
    user.add_argument("key", metavar="KEY", help="client private key, PEM")
    user.set_defaults(handler="alps.cli.config:run_user")

    show = settings.add_parser(
        "show",
        help="show the config file's path and settings",
        description="Show the config file's path and each setting.",
    )
    show.set_defaults(handler="alps.cli.config:run_show")


# The commands that take a job ID: name, short help, description.
ID_COMMANDS = {
    "stop": (
        "stop a job",
        "Stop a job: its processes get SIGTERM, then SIGKILL after a grace "
        "period. Waits until the job has stopped. Its output stays available "
        "for the server's retention period.",
    ),
    "status": (
        "show a job's status",
        "Show a job's command, owner, status and times, and once it has "
        "stopped its exit code and when its output expires.",
    ),
    "output": (
        "write a job's stdout and stderr",
        "Write the job's output so far, byte for byte: its stdout to stdout "
        "and its stderr to stderr. With --follow, keep writing new output as "
        "the job produces it, and exit once the job has stopped.",
    ),
    "take": (
        "take over a job as an admin",
        "Make yourself the owner of a job (admins only). The job keeps "
        "running; its previous owner no longer sees it.",
    ),
}


def _add_jobs(commands: argparse._SubParsersAction) -> None:
    json_option = argparse.ArgumentParser(add_help=False)
    json_option.add_argument(
        "--json", action="store_true", help="print the API's JSON reply"
    )

    start = commands.add_parser(
        "start",
        parents=[json_option],
        help="start a shell command as a new job",
        description=START_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    start.add_argument("command", nargs="+", metavar="CMD", help="the command")
    _add_limit_options(start)
    start.set_defaults(handler="alps.cli.jobs:run_start")

    for name in ("stop", "status"):
        _add_id_command(commands, json_option, name)
    output = _add_id_command(commands, json_option, "output")
    _add_output_options(output)

    listing = commands.add_parser(
        "list",
        parents=[json_option],
        help="list your jobs",
        description="List your jobs, oldest first, as a table. Commands are cut "
        "to the terminal's width ($COLUMNS if set).",
    )
    listing.add_argument(
        "--all",
        action="store_true",
        help="list every user's jobs, with an OWNER column (admins only)",
    )
    listing.set_defaults(handler="alps.cli.jobs:run_list")

    _add_id_command(commands, json_option, "take")


def _add_id_command(
    commands: argparse._SubParsersAction,
    json_option: argparse.ArgumentParser,
    name: str,
) -> argparse.ArgumentParser:
    help_text, description = ID_COMMANDS[name]
    command = commands.add_parser(
        name, parents=[json_option], help=help_text, description=description
    )
    command.add_argument("id", type=job_id, metavar="ID", help="the job's ID")
    command.set_defaults(handler=f"alps.cli.jobs:run_{name}")
    return command


def _add_limit_options(start: argparse.ArgumentParser) -> None:
    limits = start.add_argument_group(
        "limits",
        # The start parser keeps line breaks as written, so they are explicit.
        "Resource limits for the job, applied by the server with cgroups.\n"
        "A limit left unset takes the server's default. Users may not go\n"
        "above the server's maximum.",
    )
    limits.add_argument(
        "--memory",
        metavar="SIZE",
        help="memory limit in bytes, or with a unit K, M, G or T (powers of "
        "1024), such as 256M",
    )
    limits.add_argument(
        "--cpu",
        type=_cpus,
        metavar="CPUS",
        help="CPU time limit in CPUs, such as 0.5 for half of one CPU",
    )
    limits.add_argument(
        "--pids",
        type=_positive_number("process count"),
        metavar="N",
        help="maximum number of processes and threads in the job at once",
    )


def _add_output_options(output: argparse.ArgumentParser) -> None:
    output.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep writing output as it comes until the job has stopped; "
        "Ctrl-C stops following and leaves the job running",
    )
    output.add_argument(
        "--tail",
        type=_line_count,
        metavar="N",
        help="write only the last N lines of each stream (with --follow, "
        "then the new output; --tail 0 shows only new output)",
    )


def _add_dashboard(commands: argparse._SubParsersAction) -> None:
    # tui.main imports no Textual at module level, so this costs a few ms.
    from alps.tui.main import DESCRIPTION, add_options

    dashboard = commands.add_parser(
        "dashboard",
        help="watch your jobs live in the terminal",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(dashboard)
    dashboard.set_defaults(handler="alps.tui.main:run")


def _add_dev(commands: argparse._SubParsersAction) -> None:
    dev = commands.add_parser(
        "dev",
        help="run a local server for trying ALPS out",
        description="Start a worker and an API on 127.0.0.1 with a throwaway CA, "
        "a server certificate, and certificates for user@example.com (role "
        "user) and admin@example.com (role admin). Point the CLI config at the "
        "user (unless $ALPS_CONFIG is set) and run until Ctrl-C or SIGTERM. "
        "A rerun reuses the certificates and keeps the jobs.",
    )
    dev.add_argument(
        "--dir",
        metavar="DIR",
        help="folder for certificates, configs and job state "
        "(default: $XDG_STATE_HOME/alps/dev, that is ~/.local/state/alps/dev)",
    )
    dev.add_argument(
        "--port",
        type=_port,
        default=8443,
        metavar="PORT",
        help="TCP port of the API on 127.0.0.1 (default: 8443; 0 picks a free one)",
    )
    dev.add_argument(
        "--retention",
        default="1h",
        metavar="DURATION",
        help="how long a stopped job's output is kept, such as 90s, 10m or 1h "
        "(default: 1h)",
    )
    dev.add_argument(
        "--run-as",
        metavar="ACCOUNT",
        help="run jobs as this local account instead of your own (needs root); "
        "sets [worker] default_run_as",
    )
    dev.set_defaults(handler="alps.cli.dev:run_dev")


def _cpus(text: str) -> float:
    try:
        cpus = float(text)
    except ValueError:
        cpus = math.nan
    if not math.isfinite(cpus) or cpus <= 0:
        raise argparse.ArgumentTypeError(
            f"invalid CPU count {text!r}: expected a positive number, such as 0.5"
        )
    return cpus


def _positive_number(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(
                f"invalid {name} {text!r}: expected a positive integer, such as 100"
            )
        return int(text)

    return parse


def _line_count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(
            f"invalid line count {text!r}: expected 0 or a positive integer, such as 10"
        )
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(
            f"invalid port {text!r}: expected 0-65535 (0 picks a free port)"
        )
    return int(text)


if __name__ == "__main__":
    sys.exit(main())
