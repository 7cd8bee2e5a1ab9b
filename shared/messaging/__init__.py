"""The bus: envelope and event catalogue, outbox and relay, inbox and safe consumer, topology, dead letters."""
