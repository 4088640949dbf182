"""validate/test_hydration.py against a scripted systemd: the unit must have run on this boot,
succeeded and stamped what it read; turned off, it must not be enabled. The real unit runs in the
local bake's test VM (tests/e2e, slow) and in the bench's lazy-disk figure."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from _pytest.outcomes import Failed, Skipped

from validate import test_hydration

ON = {"hydration": {"enabled": True, "timeout_s": 30}}


class Systemd:
    """remote.root as the check uses it: `systemctl show` (states in turn, as systemd prints them;
    a unit that is not installed shows UnitFileState= empty and LoadState=not-found), `cat`."""

    def __init__(self, enabled="enabled", states=(("inactive", "", 0),), stamp=None):
        self.enabled, self.states, self.stamp = enabled, list(states), stamp

    def root(self, cmd):
        if cmd.startswith("systemctl show") and "UnitFileState" in cmd:
            active, result, started = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            missing = self.enabled == "not-found"
            text = (f"UnitFileState={'' if missing else self.enabled}\n"
                    f"LoadState={'not-found' if missing else 'loaded'}\nActiveState={active}\nResult={result}\n"
                    f"ExecMainStartTimestampMonotonic={started}\n")
            return SimpleNamespace(rc=0, stdout=text, stderr="", command=cmd)
        if cmd.startswith("cat "):
            ok = self.stamp is not None
            return SimpleNamespace(rc=0 if ok else 1, stdout=json.dumps(self.stamp) if ok else "",
                                   stderr="" if ok else "No such file or directory", command=cmd)
        raise AssertionError(cmd)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(test_hydration.time, "sleep", lambda s: None)


def test_passes_when_the_unit_ran_this_boot_and_stamped():
    remote = Systemd(states=[("activating", "success", 812), ("active", "success", 812),
                             ("inactive", "success", 812)],
                     stamp={"files": 1500, "bytes": 2 << 30, "seconds": 31.0})
    test_hydration.test_hydration_runs_once_on_first_boot(remote, ON)
    assert remote.states == [("inactive", "success", 812)]          # it waited for the unit to finish


@pytest.mark.parametrize("remote, words", [
    (Systemd(enabled="disabled"), "is not enabled"),
    (Systemd(states=[("inactive", "", 0)]), "did not run on this boot"),          # a sealed stamp skips it
    (Systemd(states=[("failed", "exit-code", 90)]), "ended with exit-code"),
    (Systemd(states=[("inactive", "success", 90)]), "wrote no stamp"),
    (Systemd(states=[("inactive", "success", 90)], stamp={"files": 0, "bytes": 0}), "read nothing"),
])
def test_fails_naming_what_is_wrong(remote, words):
    with pytest.raises(Failed, match=words):
        test_hydration.test_hydration_runs_once_on_first_boot(remote, ON)


def test_off_in_the_manifest_skips_with_the_reason_unless_the_unit_is_there():
    with pytest.raises(Skipped, match="hydration is off in the manifest"):
        test_hydration.test_hydration_runs_once_on_first_boot(Systemd(enabled="not-found"), {"hydration": {}})
    with pytest.raises(Failed, match="hydration is off in the manifest, but"):
        test_hydration.test_hydration_runs_once_on_first_boot(Systemd(enabled="enabled"), {"hydration": {}})
