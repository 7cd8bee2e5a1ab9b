"""The reporting service (issue 11), so far: its domain (facts.py: a case's facts folded from
events in any order; alerts.py: the alert rules; kpis.py: the KPIs over the facts; policy.py:
its policy section), its tables (the event log, the case facts), a batch of events logged and
folded in one transaction, and the rebuild from the log (`closeloop projections rebuild`).
Not runnable yet: no consumer, service or API."""
