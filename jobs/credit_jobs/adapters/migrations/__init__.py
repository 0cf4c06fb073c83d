"""Alembic migration scripts for the credit-jobs schema (run by `credit-jobs db upgrade`)."""
