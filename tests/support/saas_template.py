"""The SaaS template's tables, as the template defines them, for the tests that run credit-jobs over them.

`TEMPLATE_TABLES` is the DDL (text ids, timestamps without time zone, nullable `banned`, no unique constraint on
`user_credit.user_id`, the partial unique index on `credit_transaction (user_id, type, period_key) WHERE
period_key > 0`); `create_template_tables` runs it, optionally in another schema. Used by
test_saas_template_eligibility.py (the eligibility view) and test_saas_template_import.py (`import saas-template`).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

ELIGIBILITY_SQL = Path(__file__).parents[2] / "examples" / "saas-template" / "eligibility.sql"

TEMPLATE_TABLES = """
CREATE TABLE "user" (
    id text PRIMARY KEY, email text NOT NULL UNIQUE, created_at timestamp NOT NULL DEFAULT now(), role text,
    banned boolean, ban_reason text, ban_expires timestamp, customer_id text);
CREATE TABLE payment (
    id text PRIMARY KEY, price_id text NOT NULL, type text NOT NULL, "interval" text,
    user_id text NOT NULL REFERENCES "user"(id), customer_id text NOT NULL, subscription_id text UNIQUE,
    session_id text UNIQUE, status text NOT NULL, period_start timestamp, period_end timestamp,
    cancel_at_period_end boolean, trial_start timestamp, trial_end timestamp,
    created_at timestamp NOT NULL DEFAULT now(), updated_at timestamp NOT NULL DEFAULT now());
CREATE TABLE user_lifetime_membership (
    id text PRIMARY KEY, user_id text NOT NULL REFERENCES "user"(id), price_id text NOT NULL,
    cycle_ref_date timestamp NOT NULL, created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(), revoked_at timestamp, UNIQUE (user_id, price_id));
CREATE TABLE user_credit (
    id text PRIMARY KEY, user_id text NOT NULL REFERENCES "user"(id), current_credits integer DEFAULT 0,
    last_refresh_at timestamp, created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now());
CREATE TABLE credit_transaction (
    id text PRIMARY KEY, user_id text NOT NULL REFERENCES "user"(id), type text NOT NULL, description text,
    amount integer NOT NULL, remaining_amount integer, payment_id text, expiration_date timestamp,
    expiration_date_processed_at timestamp, period_key integer DEFAULT 0,
    created_at timestamp NOT NULL DEFAULT now(), updated_at timestamp NOT NULL DEFAULT now());
CREATE UNIQUE INDEX credit_transaction_user_type_period ON credit_transaction (user_id, type, period_key)
    WHERE period_key > 0
"""


def create_template_tables(conn: sa.Connection, schema: str | None = None) -> None:
    """The template's tables in `schema` (created; default: the connection's current schema)."""
    if schema is not None:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
    for statement in TEMPLATE_TABLES.strip().split(";\n"):
        conn.execute(sa.text(statement))
    if schema is not None:
        conn.exec_driver_sql("SET LOCAL search_path TO DEFAULT")


def create_template_with_one_live_grant(conn: sa.Connection) -> None:
    """The template's tables holding one user, 'a', with a live November 2026 renewal of 1000 credits."""
    create_template_tables(conn)
    conn.exec_driver_sql("INSERT INTO \"user\" (id, email) VALUES ('a', 'a@x')")
    conn.exec_driver_sql(
        "INSERT INTO credit_transaction (id, user_id, type, amount, remaining_amount, expiration_date, period_key) "
        "VALUES ('t1', 'a', 'SUBSCRIPTION_RENEWAL', 1000, 1000, '2026-12-20', 202611)"
    )
