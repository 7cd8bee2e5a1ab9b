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


@pytest.mark.parametrize("locale, suits", [("C", True), ("POSIX", True), ("C.UTF-8", True), ("C.utf8", True),
                                           ("en_US.UTF-8", True), ("de_DE.utf8@euro", True),
                                           ("zh_CN.GB18030", False), ("en_US.ISO-8859-1", False), ("en_US", False)])
def test_which_server_locales_a_utf8_database_may_keep(locale, suits):
    from shared.persistence.db import suits_utf8

    assert suits_utf8(locale) is suits
