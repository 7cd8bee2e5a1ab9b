"""Configuration from the environment, cooperative I/O, and what a running service loads once."""
