"""The unit of work's rules that need no database."""
import pytest

from shared.persistence.unit_of_work import Store


def test_an_event_handler_gets_one_unit_of_work():
    store = Store(engine=None, claim=("probe.record", "e-1"))
    store.unit_of_work()  # not entered: no connection needed to check the rule
    with pytest.raises(RuntimeError, match="second unit of work"):
        store.unit_of_work()


def test_outside_event_handlers_units_of_work_are_unlimited():
    store = Store(engine=None)
    assert store.unit_of_work() is not store.unit_of_work()
