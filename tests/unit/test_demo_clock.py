"""The demo clock (development only): the system time plus an offset read from a file, read again
only when the file changes, never going backwards in one process; honoured by the runtime only
with development keys, and set back by `closeloop dev --demo-clock` / `closeloop demo --rewind-clock`."""
import os
from datetime import datetime, timedelta, timezone

import pytest

from shared import cli
from shared.calendar import clock as clock_module
from shared.calendar.clock import DemoClock, DemoClockRefused, ManualClock, read_demo_offset, write_demo_offset
from shared.runtime import provider

START = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def system():
    """The system time, moved by the test."""
    return ManualClock(START)


def test_now_is_the_system_time_plus_the_offset_in_the_file(tmp_path, system):
    path = tmp_path / "clock"
    write_demo_offset(path, -14 * 86400)
    demo = DemoClock(path, system=system.now)
    assert demo.now() == START - timedelta(days=14) and demo.offset == -14 * 86400
    system.advance(minutes=5)
    assert demo.now() == START - timedelta(days=14) + timedelta(minutes=5)  # it runs at the system's pace
    write_demo_offset(path, -3600.5)
    assert demo.now() == START + timedelta(minutes=5) - timedelta(seconds=3600.5)  # the change is seen at once
    assert demo.view() == {"now": "2026-11-22T01:04:59.500000Z", "offset_seconds": -3600.5}


def test_the_file_is_read_again_only_when_it_changed(tmp_path, system, monkeypatch):
    path = tmp_path / "clock"
    write_demo_offset(path, -60)
    reads = []
    real_read = clock_module.read_demo_offset
    monkeypatch.setattr(clock_module, "read_demo_offset", lambda *a: reads.append(a) or real_read(*a))
    demo = DemoClock(path, system=system.now)
    for _ in range(50):
        demo.now()
    assert len(reads) == 1  # a stat a call, a read a change
    write_demo_offset(path, -30)
    demo.now()
    assert len(reads) == 2 and demo.offset == -30
    for seconds in range(-40, -50, -1):  # writes in quick succession, of one size: each one is seen
        write_demo_offset(path, seconds)
        assert demo.offset == seconds


def test_it_never_goes_backwards_in_one_process(tmp_path, system):
    path = tmp_path / "clock"
    write_demo_offset(path, 0)
    demo = DemoClock(path, system=system.now)
    assert demo.now() == START
    write_demo_offset(path, -86400)  # set back while running: the clock stands still instead
    assert demo.now() == START
    system.advance(hours=23)
    assert demo.now() == START
    system.advance(hours=2)  # the system time has caught up: it runs again from there
    assert demo.now() == START + timedelta(hours=1)
    assert DemoClock(path, system=system.now).now() == START + timedelta(hours=1)  # a new process starts there


def test_a_missing_file_is_real_time_and_a_garbled_one_keeps_the_last_offset(tmp_path, system):
    path = tmp_path / "clock"
    demo = DemoClock(path, system=system.now)
    assert demo.now() == START and read_demo_offset(path) == 0.0
    write_demo_offset(path, 7200)
    assert demo.now() == START + timedelta(hours=2)
    path.write_text("two hours ago\n")
    assert demo.now() == START + timedelta(hours=2)
    path.write_text("nan\n")
    with pytest.raises(ValueError):
        read_demo_offset(path)
    assert demo.now() == START + timedelta(hours=2)


def test_the_file_is_replaced_whole(tmp_path):
    path = tmp_path / "run" / "clock"  # its folder is made when missing
    write_demo_offset(path, -1.25)
    write_demo_offset(path, -2.5)
    assert path.read_text() == "-2.500000\n" and os.listdir(path.parent) == ["clock"]


def test_the_runtime_honours_the_demo_clock_only_with_development_keys(tmp_path, monkeypatch):
    path = str(tmp_path / "clock")
    write_demo_offset(path, -60)
    monkeypatch.setenv("CLOSELOOP_DEV_KEYS", "1")
    monkeypatch.delenv("CLOSELOOP_DEMO_CLOCK_FILE", raising=False)
    first = provider.clock({"DEMO_CLOCK_FILE": path})
    assert isinstance(first, DemoClock) and first.offset == -60
    assert provider.clock({"DEMO_CLOCK_FILE": path}) is first  # one clock a file: one "never backwards"
    manual = ManualClock()
    assert provider.clock({"CLOCK": manual, "DEMO_CLOCK_FILE": path}) is manual  # a test's clock wins
    assert not isinstance(provider.clock({"DEMO_CLOCK_FILE": None}), DemoClock)
    monkeypatch.setenv("CLOSELOOP_DEMO_CLOCK_FILE", path)
    assert provider.clock({}) is first  # a config made by hand: the environment says
    assert not isinstance(provider.clock({"DEMO_CLOCK_FILE": None}), DemoClock)  # a config's word wins

    monkeypatch.delenv("CLOSELOOP_DEV_KEYS")  # production
    with pytest.raises(DemoClockRefused, match="CLOSELOOP_DEV_KEYS=1.*unset CLOSELOOP_DEMO_CLOCK_FILE"):
        provider.clock({"DEMO_CLOCK_FILE": path})
    with pytest.raises(DemoClockRefused):
        provider.clock({})


def test_the_demo_clock_is_set_back_before_the_services_start(tmp_path, capsys, monkeypatch):
    path = tmp_path / "clock"
    monkeypatch.setenv("CLOSELOOP_DEMO_CLOCK_FILE", str(path))
    assert cli.main(["demo", "--rewind-clock", "--days", "14"]) == 0
    assert read_demo_offset(path) == -15 * 86400
    assert "15 days back" in capsys.readouterr().out
    assert cli.parser().parse_args(["dev", "--demo-clock"]).demo_clock == 30
    assert cli.parser().parse_args(["dev", "--demo-clock", "7"]).demo_clock == 7
    assert cli.parser().parse_args(["dev"]).demo_clock is None
