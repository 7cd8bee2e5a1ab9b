"""The chain policy file, branches' opening hours and holidays, durations and the clock."""
