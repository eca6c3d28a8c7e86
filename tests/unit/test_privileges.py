"""--user/--group/--umask/--initgroups: names resolved once into numbers, bad values
named, and the master's refusal of a switch it could not make (no processes)."""

from __future__ import annotations

import grp
import os
import pwd

import pytest

from arbiter.accounts import User
from arbiter.config import resolve
from arbiter.errors import ConfigError, UsageError
from arbiter.master import check_privileges

NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrgid(NOBODY.pw_gid)


@pytest.mark.parametrize("text", ["022", "22", "0022", "0o22"])
def test_umask_is_octal_in_every_spelling(text: str) -> None:
    assert resolve({"umask": text}, {}).privileges().umask == 0o22


def test_umask_from_a_config_file_int_and_its_default() -> None:
    assert resolve({}, {}, {"umask": 0o27}).privileges().umask == 0o27
    assert resolve({}, {}).privileges().umask is None


@pytest.mark.parametrize("name, value, message", [
    ("umask", "8", "invalid value for --umask: '8' (must be an octal number such as 022)"),
    ("umask", "1000", "invalid value for --umask: '1000' (must be an octal number from 0 to "
                      "777, such as 022)"),
    ("user", "nosuch-user", "invalid value for --user: 'nosuch-user' (no such user)"),
    ("group", "nosuch-group", "invalid value for --group: 'nosuch-group' (no such group)"),
    ("user", "99999999999", "invalid value for --user: '99999999999' (must be a user name or a "
                            "uid from 0 to 4294967294)"),
    ("uds_mode", "rw", "invalid value for --uds-mode: 'rw' (must be an octal number such as "
                       "660)"),
])
def test_bad_values_name_the_flag_and_the_value(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve({name: value}, {})
    assert str(info.value) == message and info.value.exit_code == 2


def test_env_var_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"--user \(from ARBITER_USER\): 'nosuch-user'"):
        resolve({}, {"ARBITER_USER": "nosuch-user"})


def test_a_user_name_resolves_to_its_uid_and_login_group() -> None:
    privileges = resolve({"user": "nobody"}, {}).privileges()
    assert (privileges.uid, privileges.gid, privileges.groups) == (NOBODY.pw_uid,
                                                                   NOBODY.pw_gid, ())
    assert privileges.user == f"nobody (uid {NOBODY.pw_uid})"
    assert privileges.switches and privileges.owner == (NOBODY.pw_uid, NOBODY.pw_gid)


def test_numbers_are_taken_as_ids_and_group_overrides_the_login_group() -> None:
    privileges = resolve({"user": str(NOBODY.pw_uid), "group": "0"}, {}).privileges()
    assert (privileges.uid, privileges.gid) == (NOBODY.pw_uid, 0)
    privileges = resolve({"user": "nobody", "group": NOGROUP.gr_name}, {}).privileges()
    assert privileges.gid == NOGROUP.gr_gid


def test_a_group_alone_switches_the_group_only() -> None:
    privileges = resolve({"group": NOGROUP.gr_name}, {}).privileges()
    assert (privileges.uid, privileges.gid) == (None, NOGROUP.gr_gid)
    assert privileges.owner == (-1, NOGROUP.gr_gid)


def test_no_user_no_switch() -> None:
    privileges = resolve({}, {}).privileges()
    assert not privileges.switches and privileges.owner is None
    assert resolve({}, {}).worker().privileges == privileges == resolve({}, {}).arbiter().privileges


def test_initgroups_adds_the_groups_the_group_database_lists() -> None:
    privileges = resolve({"user": "nobody", "initgroups": True}, {}).privileges()
    assert privileges.groups == tuple(sorted(set(os.getgrouplist("nobody", NOBODY.pw_gid))))
    assert NOBODY.pw_gid in privileges.groups


def test_initgroups_with_another_group_keeps_both() -> None:
    config = resolve({}, {}, {"user": User(uid=1000, name="app", gid=1000, groups=(27, 1000)),
                              "group": 33, "initgroups": True})
    assert config.privileges().groups == (27, 33, 1000)


@pytest.mark.parametrize("values, message", [
    ({"initgroups": True}, "--initgroups: True (needs --user, whose groups it sets)"),
    ({"user": "4242424"}, "--user: 4242424 (this uid has no passwd entry, so it has no login "
                          "group: give --group too)"),
    ({"user": "4242424", "group": "0", "initgroups": True},
     "--initgroups: True (uid 4242424 has no passwd entry, so /etc/group cannot list its "
     "groups)"),
])
def test_combinations_that_cannot_work_are_refused(values: dict, message: str) -> None:
    if "user" in values and _has_passwd_entry(int(values["user"])):
        pytest.skip("uid 4242424 exists here")
    with pytest.raises(ConfigError) as info:
        resolve(values, {})
    assert str(info.value) == "invalid value for " + message


def _has_passwd_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


@pytest.mark.parametrize("values, euid, egid, refused", [
    ({"user": "nobody"}, 0, 0, None),  # root may become anyone
    ({"user": "nobody"}, 1000, 1000, "--user nobody (uid 65534): switching the workers to "
                                     "another user needs root (arbiter runs as uid 1000)"),
    ({"user": "65534", "group": "65534"}, 65534, 65534, None),  # already that user: nothing to do
    ({"group": "0"}, 1000, 1000, "--group 0: switching the workers to another group needs "
                                 "root (arbiter runs as gid 1000)"),
    ({}, 1000, 1000, None),
])
def test_the_master_refuses_a_switch_only_root_could_make(values: dict, euid: int, egid: int,
                                                          refused: str | None) -> None:
    if NOBODY.pw_uid != 65534:
        pytest.skip("nobody is not uid 65534 here")
    privileges = resolve(values, {}).arbiter().privileges
    if refused is None:
        check_privileges(privileges, euid, egid)
        return
    with pytest.raises(UsageError) as info:
        check_privileges(privileges, euid, egid)
    assert str(info.value) == refused and info.value.exit_code == 2
