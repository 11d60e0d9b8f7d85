"""`store/schema.sql` is the schema the migrations add up to, and every SQL function in it
has a caller (a forerunner replaced by a versioned one is dropped by a migration)."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

from store import schema

ROOT = Path(__file__).resolve().parent.parent


async def test_schema_file_is_what_the_migrations_make(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        current = await schema.dump(conn)
    finally:
        await conn.close()
    assert current == schema.SCHEMA_FILE.read_text(encoding="utf-8"), (
        "store/schema.sql is stale: run `python -m store.schema` and commit it"
    )


def test_every_sql_function_has_a_caller() -> None:
    text = schema.SCHEMA_FILE.read_text(encoding="utf-8")
    functions = re.findall(r"^CREATE OR REPLACE FUNCTION public\.(\w+)\(", text, re.M)
    assert functions
    code = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "store").glob("*.py"))
    bodies = re.split(r"^CREATE OR REPLACE FUNCTION ", text, flags=re.M)
    uncalled = [
        f
        for f in functions
        if f"{f}(" not in code
        and not any(f"{f}(" in body and not body.startswith(f"public.{f}(") for body in bodies)
    ]
    assert not uncalled, f"SQL functions nothing calls (drop them in a migration): {uncalled}"
