"""The investigation service: built in a later issue (see DESIGN.md)."""
