"""Reference lists, matching values to them, cases across documents, consistency findings."""
