"""The MEPROP_* switches: read in one place (meprop.settings); a bad value is said in one line,
naming the variable, the value and what is accepted, by the library and by its command line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from meprop import kernels, settings, tuning

BAD = [("MEPROP_KERNELS", "bogus", "auto, on, off"), ("MEPROP_TUNING", "sometimes", "on or off")]


@pytest.mark.parametrize("name, value, accepted", BAD)
def test_a_bad_value_raises_one_line_naming_it(monkeypatch, name, value, accepted):
    monkeypatch.setenv(name, value)
    with pytest.raises(settings.SettingError) as info:
        kernels.enabled() if name == "MEPROP_KERNELS" else tuning.enabled()
    message = str(info.value)
    assert "\n" not in message and name in message and repr(value) in message and accepted in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("spelling, value", [("", "auto"), (" OFF ", "off"), ("1", "on"), ("No", "off")])
def test_spellings_of_the_kernels_switch(monkeypatch, spelling, value):
    monkeypatch.setenv("MEPROP_KERNELS", spelling)
    assert settings.kernels() == value


@pytest.mark.parametrize("command, name, value, accepted", [("status", *BAD[0]), ("build", *BAD[1])])
def test_the_kernels_command_says_a_bad_setting_in_one_line(command, name, value, accepted):
    env = dict(os.environ, **{name: value})
    result = subprocess.run([sys.executable, "-m", "meprop.kernels", command], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and repr(value) in lines[0] and accepted in lines[0]
