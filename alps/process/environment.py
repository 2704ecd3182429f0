"""What a job starts with: its account, working folder and environment.

A job never sees the worker's environment, which may hold the service manager's
variables or paths to keys. It gets this set and nothing else:

- ``PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin``
- ``HOME``, ``USER``, ``LOGNAME``: those of the account the job runs as
- ``SHELL=/bin/sh``, ``LANG=C.UTF-8``
- ``PWD``: the working folder, the account's home folder (``/`` if it has none)
- ``ALPS_JOB_ID``: the job's ID
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

JOB_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...] = ()

    def credentials(self) -> dict[str, object]:
        """Return the IDs that the job's process takes before it runs the command."""
        return {"uid": self.uid, "gid": self.gid, "groups": list(self.groups)}


def current_account() -> Account:
    """Return the account that the worker runs as."""
    uid = os.geteuid()
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return Account(name=str(uid), uid=uid, gid=os.getegid(), home="/")
    return Account(name=entry.pw_name, uid=uid, gid=entry.pw_gid, home=entry.pw_dir)


# The account that a root worker runs jobs as when nothing names another: a job
# that ran as root could read the keys, reach the worker's socket and act as
# any user. "root" has to be named to run jobs as root.
UNPRIVILEGED = "nobody"


def default_account(name: str | None) -> Account:
    """Return the account for jobs whose owner the ACL gives no ``run_as``.

    That is ``name`` when set, else ``nobody`` for a root worker, else the
    worker's own user. Raise KeyError if the account does not exist.
    """
    if name is not None:
        return find_account(name)
    if os.geteuid() == 0:
        return find_account(UNPRIVILEGED)
    return current_account()


def find_account(name: str) -> Account:
    """Return the named account with its groups; raise KeyError if there is none."""
    entry = pwd.getpwnam(name)
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return Account(
        name=entry.pw_name,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        home=entry.pw_dir,
        groups=groups,
    )


def working_folder(account: Account) -> str:
    return account.home if os.path.isdir(account.home) else "/"


def job_environment(job_id: int, account: Account, cwd: str) -> dict[str, str]:
    return {
        "PATH": JOB_PATH,
        "HOME": account.home,
        "USER": account.name,
        "LOGNAME": account.name,
        "SHELL": "/bin/sh",
        "LANG": "C.UTF-8",
        "PWD": cwd,
        "ALPS_JOB_ID": str(job_id),
    }
