"""Errors investigation raises to RPC callers. It serves no RPC yet: its refusals are the domain's
exceptions (domain.CaseRuleBroken, CaseStateConflict; remedies.RemedyRefused), turned into HTTP
answers in handlers.py. A later RPC lists here what it raises, as services/intake/exceptions.py does."""
