"""``mig-annotator audit``: DuckDB reports and read-only SQL over a built dataset."""
