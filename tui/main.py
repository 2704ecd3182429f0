"""``alps-dashboard``: parse the options, read the config, run the app."""

from __future__ import annotations

import argparse
import math
import sys

from alps import __version__
from alps.tui import POLL_INTERVAL

EXIT_ERROR = 1

DESCRIPTION = """\
A live view of your ALPS jobs in the terminal (of every job for an admin).
It uses the settings of the 'alps' command: the config file $ALPS_CONFIG if
set, else $XDG_CONFIG_HOME/alps/config.toml (~/.config/alps/config.toml).

Keys: Enter follows the selected job's output, Escape closes it; n starts a
job, s stops the selected job, t takes it over (admins), / filters, q quits."""


def main(argv: list[str] | None = None) -> int:
    """Run ``alps-dashboard``; return 1 with a one-line message on a config error."""
    args = build_parser().parse_args(argv)
    from alps.tui.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"alps-dashboard: error: {error.message}", file=sys.stderr)
        return EXIT_ERROR

    from alps.tui.app import DashboardApp

    DashboardApp(settings, interval=args.interval).run()
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the dashboard as ``alps dashboard``; raise CommandError on a config error.

    The ``alps`` command prints the error as its other commands do.
    """
    from alps.cli.errors import CommandError
    from alps.tui.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as error:
        raise CommandError(error.message) from None

    from alps.tui.app import DashboardApp

    DashboardApp(settings, interval=args.interval).run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alps-dashboard",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser)
    parser.add_argument(
        "--version", action="version", version=f"alps-dashboard {__version__}"
    )
    return parser


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add the dashboard's options, for ``alps-dashboard`` and ``alps dashboard``."""
    parser.add_argument(
        "--interval",
        type=_interval,
        default=POLL_INTERVAL,
        metavar="SECONDS",
        help="time between two fetches of the job list, in seconds "
        f"(default: {POLL_INTERVAL:g})",
    )


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.1 <= value <= 60:
        raise argparse.ArgumentTypeError(
            f"invalid interval {text!r}: expected seconds from 0.1 to 60, such as 0.5"
        )
    return value


if __name__ == "__main__":
    sys.exit(main())
