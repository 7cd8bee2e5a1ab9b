"""Intake: the branches' front door (complaints, feedback, sales)."""
