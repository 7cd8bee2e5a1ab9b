"""Prometheus text metrics, one small registry per service (several services may share a
process in tests). Gauges of shared state (the database's outbox, the broker's queues) are
made at scrape time and rendered apart (`render_gauges`), so that each is published once
rather than by every replica (see shared.web.health)."""
from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class Registry:
    def __init__(self):
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}
        self._counters: dict[str, dict[tuple, float]] = defaultdict(dict)
        self._histograms: dict[str, dict[tuple, list]] = defaultdict(dict)
        self._gauges: dict[tuple, tuple[str, str, float, dict]] = {}

    def inc(self, name: str, help_text: str, value: float = 1.0, **labels) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._help.setdefault(name, ("counter", help_text))
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + value

    def observe(self, name: str, help_text: str, seconds: float, **labels) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._help.setdefault(name, ("histogram", help_text))
            state = self._histograms[name].setdefault(key, [[0] * len(BUCKETS), 0.0, 0])
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    state[0][i] += 1
            state[1] += seconds
            state[2] += 1

    def set_gauge(self, name: str, help_text: str, value: float, **labels) -> None:
        """A value that goes up and down, kept by the process (e.g. messages held back)."""
        with self._lock:
            self._gauges[(name, tuple(sorted(labels.items())))] = (name, help_text, value, labels)

    def render(self, gauges: list[tuple[str, str, float, dict]] = ()) -> str:
        lines: list[str] = []
        with self._lock:
            gauges = [*gauges, *self._gauges.values()]
        with self._lock:
            for name, series in sorted(self._counters.items()):
                lines += [f"# HELP {name} {self._help[name][1]}", f"# TYPE {name} counter"]
                lines += [f"{name}{_labels(dict(k))} {v}" for k, v in sorted(series.items())]
            for name, series in sorted(self._histograms.items()):
                lines += [f"# HELP {name} {self._help[name][1]}", f"# TYPE {name} histogram"]
                for key, (counts, total, count) in sorted(series.items()):
                    labels = dict(key)
                    for bound, c in zip(BUCKETS, counts):
                        lines.append(f"{name}_bucket{_labels({**labels, 'le': bound})} {c}")
                    lines.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {count}")
                    lines.append(f"{name}_sum{_labels(labels)} {total}")
                    lines.append(f"{name}_count{_labels(labels)} {count}")
        described = set()
        for name, help_text, value, labels in sorted(gauges, key=lambda g: g[0]):
            if name not in described:  # one HELP/TYPE per metric, however many series
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
                described.add(name)
            lines.append(f"{name}{_labels(labels)} {value}")
        return "\n".join(lines) + "\n"


_registries: dict[str, Registry] = {}
_registries_lock = threading.Lock()


def registry(service: str) -> Registry:
    with _registries_lock:
        return _registries.setdefault(service, Registry())


def render_gauges(gauges: list[tuple[str, str, float, dict]]) -> str:
    """Gauges alone, in the same text format, without any process's counters."""
    return Registry().render(gauges)
