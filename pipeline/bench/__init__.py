"""The side-by-side benchmark (python -m jobs.bench) and its reports."""
