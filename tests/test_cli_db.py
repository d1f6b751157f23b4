"""`gocluster db upgrade | current | downgrade`: the schema moves both ways, on both databases."""

from __future__ import annotations

from sqlalchemy import inspect

from tests.service_process import run_cli, service_env
from workflows.store.database import create_db_engine


def _tables(url: str) -> set[str]:
    engine = create_db_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_the_schema_goes_down_to_empty_and_up_again_and_current_says_where_it_is(
    db_url: str,
) -> None:
    env = service_env({"GOCLUSTER_DATABASE_URL": db_url})
    run_cli(["db", "upgrade"], env)
    migrated = _tables(db_url)
    assert {"clusters", "inbox", "outbox", "timers"} <= migrated
    head = run_cli(["db", "current"], env).stdout
    assert "database: 0" in head
    assert "database: empty" not in head

    run_cli(["db", "downgrade", "base"], env)
    assert _tables(db_url) == set()
    assert "database: empty" in run_cli(["db", "current"], env).stdout

    run_cli(["db", "upgrade"], env)
    assert _tables(db_url) == migrated


def test_downgrading_to_an_unknown_revision_is_one_clear_line(sqlite_url: str) -> None:
    env = service_env({"GOCLUSTER_DATABASE_URL": sqlite_url})
    run_cli(["db", "upgrade"], env)
    done = run_cli(["db", "downgrade", "no-such-revision"], env, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "Error: cannot downgrade to 'no-such-revision': "
        "Can't locate revision identified by 'no-such-revision'"
    )
