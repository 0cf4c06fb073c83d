"""`python -m credit_jobs …` is the same as the `credit-jobs` console script."""

from credit_jobs.entrypoints.cli import entrypoint

entrypoint()
