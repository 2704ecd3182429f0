"""The access control list: which identity may use ALPS, and with which role.

The file maps identities to roles::

    [users."user@example.com"]
    role = "user"
    run_as = "alice"    # optional: the account that this user's jobs run as

Identities are compared with their ASCII letters in lower case. ``user`` sees
and stops its own jobs; ``admin`` may see, stop and take any job.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from alps.errors import ConfigError


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def normalize_identity(identity: str) -> str:
    """Return ``identity`` with its ASCII letters in lower case, nothing else.

    ``str.lower`` would also fold other scripts, so that a certificate name
    with a Kelvin sign "K" could match an ACL entry with the letter "k".
    """
    return identity.translate(_ASCII_LOWER)


# POSIX portable user names, as useradd accepts them by default.
ACCOUNT_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?$", re.IGNORECASE)


@dataclass(frozen=True)
class Acl:
    path: Path
    roles: dict[str, Role]
    # The account each identity's jobs run as, where the ACL names one.
    run_as: dict[str, str] = field(default_factory=dict)

    def role_of(self, identity: str) -> Role | None:
        """Return the role of ``identity``, or None when it is not listed."""
        return self.roles.get(normalize_identity(identity))

    def run_as_of(self, identity: str) -> str | None:
        return self.run_as.get(normalize_identity(identity))


def load_acl(path: str | Path) -> Acl:
    """Load the ACL at ``path``; raise ConfigError naming the file and the problem."""
    acl_path = Path(path)
    try:
        with acl_path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"cannot read ACL {acl_path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"ACL {acl_path}: invalid TOML: {error}") from None

    unknown = sorted(set(data) - {"users"})
    if unknown:
        raise ConfigError(f"ACL {acl_path}: unknown section [{unknown[0]}]")
    users = data.get("users", {})
    if not isinstance(users, dict):
        raise ConfigError(f"ACL {acl_path}: [users] must be a table")

    roles: dict[str, Role] = {}
    run_as: dict[str, str] = {}
    for identity, entry in users.items():
        roles_key = normalize_identity(identity)
        where = f"ACL {acl_path}: users.{identity!r}"
        if not roles_key:
            raise ConfigError(f"{where}: the identity must not be empty")
        if roles_key != roles_key.strip():
            raise ConfigError(f"{where}: the identity has spaces at an end")
        if roles_key in roles:
            raise ConfigError(f"{where}: listed twice (identities ignore case)")
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a table with a role")
        extra = sorted(set(entry) - {"role", "run_as"})
        if extra:
            raise ConfigError(f"{where}: unknown setting {extra[0]!r}")
        role = entry.get("role")
        if role not in {r.value for r in Role}:
            raise ConfigError(f"{where}: invalid role {role!r}: use 'user' or 'admin'")
        roles[roles_key] = Role(role)
        if "run_as" in entry:
            account = entry["run_as"]
            if not isinstance(account, str) or not ACCOUNT_NAME.match(account):
                raise ConfigError(f"{where}: invalid run_as account {account!r}")
            run_as[roles_key] = account
    return Acl(path=acl_path, roles=roles, run_as=run_as)
