"""Tokens, identities, permissions, keys and customers' personal data."""
