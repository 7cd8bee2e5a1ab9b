"""The event catalogue: the payload schema of every event type, by the service that
publishes it. A type's shape changes only under a new version; fields may be added."""
from shared.messaging.catalogue import aftercare, intake, investigation, reporting

# (type, version) -> payload schema class
SCHEMAS: dict = {}
# type -> the services that publish it (exchange `<source>.events`)
SOURCES: dict[str, frozenset[str]] = {}
# type -> the newest version this code knows
LATEST: dict[str, int] = {}

for _module in (intake, investigation, aftercare, reporting):
    for (_type, _version), _schema in _module.SCHEMAS.items():
        if SCHEMAS.setdefault((_type, _version), _schema) is not _schema:
            raise RuntimeError(f"{_type} v{_version} has two different schemas")
        SOURCES[_type] = SOURCES.get(_type, frozenset()) | {_module.SOURCE}
        LATEST[_type] = max(LATEST.get(_type, 0), _version)
