"""Shared fixtures: databases for the storage contract suite, the policy and a workflow.

`db_url` / `db_engine` run a test once on SQLite and once on PostgreSQL (marked
`postgres`). PostgreSQL missing is a skip on a laptop and a failure in CI.
"""

# ruff: noqa: E402  (the plugin registration comes first, where readers look for it)
pytest_plugins = ["tests.kafka_fixtures"]

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.dbutil import (
    ADMIN_URL,
    create_postgres_database,
    drop_postgres_database,
    in_ci,
    postgres_problem,
    sqlite_file_url,
)
from tests.office_support import load_story
from workflows.dates import FixedClock
from workflows.engine import Workflow
from workflows.policy import Policy, load_policy
from workflows.store.database import create_db_engine, upgrade

SERVICE_SOURCE = "/gocluster/membership"
# The `workflow` fixture's service clock: after the stories of the tests that use it, so
# that no event lies more than max_clock_skew ahead of it (those that test that rule set
# their own clock).
WORKFLOW_START = datetime(2030, 1, 1, tzinfo=UTC)
_POSTGRES_FIXTURES = frozenset({"postgres_url", "postgres_admin_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that asks for PostgreSQL by fixture is a `postgres` test, marked or not."""
    for item in items:
        if _POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    problem = postgres_problem(ADMIN_URL)
    if problem is not None:
        message = (
            f"PostgreSQL at {ADMIN_URL} is unreachable ({problem}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        )
        if in_ci():
            pytest.fail(f"CI is set, so this is an error, not a skip: {message}")
        pytest.skip(message)
    return ADMIN_URL


@pytest.fixture
def new_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], str]]:
    """Factory: a fresh empty database ("sqlite" or "postgres") per call, removed afterwards."""
    created: list[str] = []
    admin: list[str] = []

    def make(backend: str) -> str:
        if backend == "sqlite":
            return sqlite_file_url(tmp_path_factory.mktemp("db"), f"{uuid.uuid4().hex[:8]}.db")
        if backend != "postgres":
            raise ValueError(f"unknown backend {backend!r}")
        if not admin:
            admin.append(request.getfixturevalue("postgres_admin_url"))
        url = create_postgres_database(admin[0])
        created.append(url)
        return url

    yield make
    for url in created:
        drop_postgres_database(admin[0], url)


@pytest.fixture
def postgres_url(postgres_admin_url: str, new_database_url: Callable[[str], str]) -> str:
    """A fresh empty PostgreSQL database (gocluster_t_<uuid8>), dropped WITH (FORCE) after."""
    return new_database_url("postgres")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/gocluster.db"


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    ids=["sqlite", "postgres"],
)
def db_url(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return str(request.getfixturevalue(f"{backend}_url"))


@pytest.fixture
def fresh_db_url(db_url: str, new_database_url: Callable[[str], str]) -> Callable[[], str]:
    """Factory: another empty database on the same backend as `db_url`."""
    backend = "sqlite" if db_url.startswith("sqlite") else "postgres"
    return lambda: new_database_url(backend)


@pytest.fixture
def db_engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy()


@pytest.fixture
def workflow(db_engine: Engine, policy: Policy) -> Workflow:
    return Workflow(db_engine, policy, FixedClock(WORKFLOW_START), SERVICE_SOURCE)


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    ids=["sqlite", "postgres"],
)
def office_story_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The programme office's known story (tests/office_support.py), once per module and
    backend: the office's views only read it."""
    if request.param == "sqlite":
        url = sqlite_file_url(tmp_path_factory.mktemp("story"))
        load_story(url)
        yield url
        return
    admin = request.getfixturevalue("postgres_admin_url")
    url = create_postgres_database(admin)
    try:
        load_story(url)
        yield url
    finally:
        drop_postgres_database(admin, url)
