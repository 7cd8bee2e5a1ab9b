"""No input produces a 500: seeded random mutations of valid bodies, posted to a running intake."""
import copy
import random

import pytest

from tests.e2e.test_intake_http import COMPLAINT

pytestmark = pytest.mark.e2e

SALE = {"customer": {"name": "李女士", "phone": "13900001111", "contact_consent": True},
        "sold_at": "2026-11-22T09:30:00+08:00",
        "items": [{"type": "product", "sku": "SK-01", "product_type": "skincare", "batch": "B7"}]}
ODD_VALUES = [None, True, 0, -1, 10**30, 1.5, "", " ", "x" * 6000, "😀", "\u0000", "\ud800", [], {}, [None],
              {"a": 1}, [[[]]], "2026-13-45T99:99:99Z", "0001-01-01T00:00:00+14:00", "13812346138", "complaint",
              "SH001", "NaN"]


def mutations(body: dict, rng: random.Random, count: int):
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                paths.append(path + [key])
                walk(value, path + [key])
        elif isinstance(node, list):
            for i, value in enumerate(node):
                paths.append(path + [i])
                walk(value, path + [i])
    walk(body, [])
    for _ in range(count):
        mutated = copy.deepcopy(body)
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(paths)
            parent = mutated
            try:
                for step in path[:-1]:
                    parent = parent[step]
                if rng.random() < 0.2 and isinstance(parent, dict):
                    parent.pop(path[-1], None)
                else:
                    parent[path[-1]] = rng.choice(ODD_VALUES)
            except (KeyError, IndexError, TypeError):
                pass  # an earlier mutation replaced a parent
        yield mutated
    yield from ([], "text", 42, None, [COMPLAINT], "[" * 5000 + "]" * 5000)


@pytest.mark.parametrize("path, valid", [("/v1/complaints", COMPLAINT), ("/v1/sales", SALE)])
def test_random_bodies_never_produce_a_500(http, intake, token, path, valid):
    rng = random.Random(20261122)
    headers = {"Authorization": f"Bearer {token('front_desk', branch='SH001')}", "Content-Type": "application/json"}
    import json

    statuses = {}
    for body in mutations(valid, rng, 250):
        # ASCII escapes, so that odd values (lone surrogates among them) arrive as JSON text.
        data = body if isinstance(body, str) and body.startswith("[[") else json.dumps(body)
        response = http.post(intake.url(path), data=data.encode(), headers=headers, timeout=10)
        assert response.status_code < 500, (body, response.text)
        error = response.json().get("error") if response.status_code >= 400 else None
        assert error is None or {"code", "message", "fields"} <= set(error)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    assert statuses.get(400, 0) > 100 and statuses.get(201, 0) > 0  # the fuzzer reached both outcomes
