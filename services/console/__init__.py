"""Console: the staff's web front end (issue 12)."""
