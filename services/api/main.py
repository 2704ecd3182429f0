"""``alps-api --config FILE``: serve the HTTPS API with mutual TLS."""

from __future__ import annotations

import argparse
import logging
import ssl
import sys

from sanic import Sanic

from alps import __version__, logs, memory
from alps.acl import load_acl
from alps.config import load_server_config
from alps.errors import ConfigError
from alps.ipc import WorkerClient
from alps.logs import event
from alps.services.api.app import Api, create_app
from alps.services.api.tls import server_context

logger = logging.getLogger("alps.api")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="alps-api",
        description="Serve the ALPS HTTPS API (mutual TLS) in front of the worker.",
    )
    parser.add_argument(
        "--config", required=True, metavar="FILE", help="server configuration (TOML)"
    )
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)
    logs.setup("alps-api")
    memory.bound_heaps()
    # Sanic's own start and stop lines speak of its "workers", which would be
    # confused with the ALPS worker; its warnings and errors still show.
    logging.getLogger("sanic").setLevel(logging.WARNING)

    try:
        config = load_server_config(args.config, need_api=True)
        api_config = config.api
        assert api_config is not None
        acl = load_acl(api_config.acl)
        api = Api(api_config, acl, WorkerClient(str(config.worker.socket)))
        context = server_context(
            api_config.ca, api_config.cert, api_config.key, api.handshake_failed
        )
    except ConfigError as error:
        return _fail(str(error))
    except (OSError, ssl.SSLError) as error:
        return _fail(f"cannot load the TLS certificates, key or audit log: {error}")

    app = create_app(api)
    app.config.RESPONSE_TIMEOUT = api_config.response_timeout
    # Open follows would otherwise hold a stop of the API for Sanic's default 15 s;
    # their clients resume from the last byte they got.
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = 3.0

    @app.after_server_start
    async def announce(app: Sanic) -> None:
        logger.info(
            event(
                "api ready",
                listen=f"{api_config.host}:{api_config.port}",
                worker=config.worker.socket,
                users=len(acl.roles),
            )
        )

    try:
        app.run(
            host=api_config.host,
            port=api_config.port,
            ssl=context,
            single_process=True,
            motd=False,
            access_log=False,
        )
    except OSError as error:
        return _fail(
            f"cannot listen on {api_config.host}:{api_config.port}: {error.strerror}"
        )
    logger.info(event("api stopped"))
    return 0


def _fail(message: str) -> int:
    logger.error(event("api failed to start", error=message))
    print(f"alps-api: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
