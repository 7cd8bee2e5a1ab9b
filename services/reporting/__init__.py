"""The reporting service (issue 11): so far its domain only (facts.py: a case's facts folded from
events in any order; alerts.py: the alert rules; kpis.py: the KPIs over the facts). Not runnable
yet: no service, tables or API."""
