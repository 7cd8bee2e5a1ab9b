"""How `make test` finds its RabbitMQ and PostgreSQL, and that it fails loudly without them."""
import pytest

from shared.testing import infra


def test_servers_named_in_the_environment_that_do_not_answer_fail_with_what_to_provide():
    with pytest.raises(infra.InfraMissing) as raised:
        infra.resolve({"AMQP_URI": "amqp://guest:guest@127.0.0.1:1//", "DATABASE_URL": "postgresql://x@127.0.0.1:1"})
    message = str(raised.value)
    assert "AMQP_URI and DATABASE_URL set but not answering" in message
    assert "Docker engine" in message and "DATABASE_URL=postgresql://" in message


def test_nothing_local_and_no_docker_fails_with_what_to_provide(monkeypatch):
    monkeypatch.setattr(infra, "_answers", lambda url, port: False)
    monkeypatch.setattr(infra, "_docker_answers", lambda: False)
    with pytest.raises(infra.InfraMissing) as raised:
        infra.resolve({})
    assert "no Docker engine answers" in str(raised.value)


def test_local_defaults_are_used_when_they_answer(monkeypatch):
    monkeypatch.setattr(infra, "_answers", lambda url, port: True)
    resolved = infra.resolve({})
    assert (resolved.origin, resolved.amqp_uri) == ("local", "amqp://guest:guest@127.0.0.1:5672//")
