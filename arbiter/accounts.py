"""User and group names -> ids, looked up once, when the config is resolved.

``--user`` and ``--group`` are resolved here (the passwd and group databases,
through NSS) so a typo stops the start with exit 2, and workers receive plain
numbers: after the fork nothing looks a name up again. The switch itself is
``arbiter.process.switch_user``, called by each worker.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd

MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to chown(2) and setreuid(2)


@dataclasses.dataclass(frozen=True)
class User:
    """A --user value: the uid, and what the passwd entry says about it, if any."""

    uid: int
    name: str | None = None  # None: a bare uid with no passwd entry
    gid: int | None = None  # the login group
    groups: tuple[int, ...] = ()  # the groups /etc/group lists it in, and its login group

    def __str__(self) -> str:
        return f"{self.name} (uid {self.uid})" if self.name else f"uid {self.uid}"


def lookup_user(text: str) -> User:
    """A name or a uid; LookupError when a name has no passwd entry, ValueError
    for a uid out of range. A bare uid with no entry is allowed (containers)."""
    if text.isdigit():
        uid = _id(text)
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return User(uid)
    else:
        try:
            entry = pwd.getpwnam(text)
        except KeyError:
            raise LookupError(text) from None
    return User(entry.pw_uid, entry.pw_name, entry.pw_gid,
                tuple(sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid)))))


def lookup_group(text: str) -> int:
    """A group name or a gid; LookupError for an unknown name."""
    if text.isdigit():
        return _id(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise LookupError(text) from None


def _id(text: str) -> int:
    value = int(text)
    if value > MAX_ID:
        raise ValueError(text)
    return value
