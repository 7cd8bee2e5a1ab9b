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


def test_containers_can_be_forced_even_when_servers_answer(monkeypatch):
    monkeypatch.setattr(infra, "_answers", lambda url, port: True)
    monkeypatch.setattr(infra, "_docker_answers", lambda: True)
    monkeypatch.setattr(infra, "_containers", lambda: infra.Infra("amqp://c", "postgresql://c", "testcontainers"))
    env = {"CLOSELOOP_TEST_INFRA": "containers", "AMQP_URI": "amqp://set", "DATABASE_URL": "postgresql://set"}
    assert infra.resolve(env).origin == "testcontainers"


def test_forcing_containers_without_docker_or_with_an_unknown_value_fails_clearly(monkeypatch):
    monkeypatch.setattr(infra, "_answers", lambda url, port: True)
    monkeypatch.setattr(infra, "_docker_answers", lambda: False)
    with pytest.raises(infra.InfraMissing, match="no Docker engine answers"):
        infra.resolve({"CLOSELOOP_TEST_INFRA": "containers"})
    with pytest.raises(infra.InfraMissing, match="only value is 'containers'"):
        infra.resolve({"CLOSELOOP_TEST_INFRA": "container"})
