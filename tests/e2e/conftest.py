from dataclasses import dataclass

import pytest

from shared.calendar.clock import ManualClock


@dataclass
class Intake:
    service: object
    relay: object
    sender: object
    database_url: str
    clock: ManualClock

    def url(self, path: str) -> str:
        return self.service.url(path)


@pytest.fixture
def intake(start_service, start_relay, start_sender, database_factory):
    """Intake, its relay and its notification sender (recording what it sends), on a fresh
    database, with a clock the test moves.
    10:00 in Shanghai on 2026-11-22."""
    from datetime import datetime, timezone

    clock = ManualClock(datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc))
    url = database_factory("intake")
    service = start_service("intake", clock=clock, database_url=url)
    relay = start_relay(url)
    from services.intake.service import IntakeService

    sender = start_sender(url, service="intake", on_outcome=IntakeService.message_outcome)
    return Intake(service, relay, sender, url, clock)


@pytest.fixture
def events(bus_listener):
    return bus_listener("intake.events")
