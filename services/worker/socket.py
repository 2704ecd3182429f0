"""The worker's Unix socket: a private folder, and no hijack of a live worker.

Whoever can connect to the socket can run commands as the worker's user, so the
socket is mode 0600 (0660 with a configured group) and its folder must be owned
by the worker's user and writable by nobody else: in a folder that others can
write, another user could replace the socket with their own.
"""

from __future__ import annotations

import grp
import os
import socket
import stat
from pathlib import Path


class SocketError(Exception):
    """The socket or its folder cannot be used safely; the message says why."""


def socket_mode(group: str | None) -> int:
    return 0o600 if group is None else 0o660


def prepare_socket(path: Path, group: str | None) -> None:
    """Check the socket's folder and clear a stale socket file left by a crash."""
    gid = _group_id(group)
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=0o700 if gid is None else 0o750, parents=True)
        if gid is not None:
            os.chown(folder, -1, gid)
    _check_folder(folder)
    _clear_stale(path)


def _group_id(group: str | None) -> int | None:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise SocketError(
            f"socket_group {group!r} is not a group on this host"
        ) from None


def _check_folder(folder: Path) -> None:
    info = folder.stat()
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid not in (os.geteuid(), 0):
        raise SocketError(
            f"socket folder {folder} belongs to UID {info.st_uid}, not to the "
            f"worker's user; use a folder that the worker's user owns"
        )
    if mode & 0o022:
        raise SocketError(
            f"socket folder {folder} is writable by others (mode {mode:o}); "
            f"use a private folder, or run: chmod 700 {folder}"
        )


def _clear_stale(path: Path) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise SocketError(
            f"{path} exists and is not a socket; remove it or pick another"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        # Nobody listens: the file is left over from a worker that crashed.
        path.unlink()
        return
    except OSError as error:
        raise SocketError(f"cannot check socket {path}: {error.strerror}") from None
    finally:
        probe.close()
    raise SocketError(f"another worker is already serving on {path}")
