"""The aftercare service: built in a later issue (see DESIGN.md)."""
