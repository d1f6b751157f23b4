"""Security checks: secrets never leave the process, SQL is parametrised, bad config is named.

1. The database password and the SASL password appear in no log line or error
   message, whatever fails (the broker, the database, the configuration),
2. nor in any DLQ record.
3. Every SQL statement is built by SQLAlchemy with bound parameters: a scan of
   the source finds no string formatting on the way to the database, and text
   full of SQL metacharacters round-trips unchanged on SQLite and PostgreSQL.
4. A bad setting or policy stops the command with one line naming it, no traceback.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import signal
import socket
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka.consumer.fetcher import ConsumerRecord
from psycopg import sql
from pydantic import ValidationError
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from consumers.bootstrap import build
from consumers.cli_support import config_problems
from consumers.config import REDACTED, Settings
from consumers.event_consumer import decode
from consumers.records import STRUCTURED_HEADERS, RecordOrigin, dlq_record, structured_value
from tests import builders as b
from tests.brokers import Broker
from tests.kafka_fixtures import KafkaTopics, produce
from tests.service_process import (
    ServiceProcess,
    header,
    migrate,
    read_topics,
    run_cli,
    service_env,
    wait_until,
)
from workflows.dates import FixedClock
from workflows.engine import Inbound, Workflow
from workflows.policy import Policy
from workflows.store import queries
from workflows.store.database import create_db_engine
from workflows.store.tables import clusters, inbox, labels

ROOT = Path(__file__).resolve().parent.parent
# Distinctive values to grep for; DB_SECRET is the real password of a role made per test.
DB_SECRET = "s3cr3t-db-PW-xyz"  # noqa: S105
SASL_SECRET = "s4sl-PW-qrs-789"  # noqa: S105
SECRETS = (DB_SECRET, SASL_SECRET)
DAY = date(2025, 3, 3)


def leaks(text: str | bytes) -> list[str]:
    """Which secrets (as they are or URL-encoded) are in `text`."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    forms = {s: {s, urllib.parse.quote(s), urllib.parse.quote_plus(s)} for s in SECRETS}
    return [secret for secret, variants in forms.items() if any(v in text for v in variants)]


def with_password(url: str, password: str = DB_SECRET) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


@pytest.fixture
def secret_db_url(postgres_url: str, postgres_admin_url: str) -> Iterator[str]:
    """`postgres_url`'s database, owned by a role of its own that logs in with DB_SECRET."""
    role = f"gocluster_sec_{uuid.uuid4().hex[:8]}"
    admin = make_url(postgres_admin_url).set(drivername="postgresql")
    database = make_url(postgres_url).database
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(DB_SECRET)
            )
        )
        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(database), sql.Identifier(role)
            )
        )
    yield (
        make_url(postgres_url)
        .set(username=role, password=DB_SECRET)
        .render_as_string(hide_password=False)
    )
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SASL_ENV = {
    "GOCLUSTER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "GOCLUSTER_KAFKA_SASL_MECHANISM": "PLAIN",
    "GOCLUSTER_KAFKA_SASL_USERNAME": "svc-gocluster",
    "GOCLUSTER_KAFKA_SASL_PASSWORD": SASL_SECRET,
}


# -- 1. secrets in process output --------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.slow
def test_run_never_prints_the_database_or_sasl_password_while_kafka_fails(
    secret_db_url: str, kafka_broker: Broker, tmp_path: Path
) -> None:
    """Both services run at once: one with nothing listening on its bootstrap port, one
    against a broker that refuses the SASL handshake. SIGTERM once kafka-python has
    logged its failures; the exit then takes up to ~30 s, kafka-python's bootstrap
    timeout, during which it keeps retrying (and logging)."""
    migrate(secret_db_url)
    base = service_env({"GOCLUSTER_DATABASE_URL": secret_db_url}, SASL_ENV)
    closed = ServiceProcess(
        base | {"GOCLUSTER_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed_port()}"},
        ("run",),
        name="closed-port",
        log_dir=tmp_path,
    )
    refused = ServiceProcess(
        base | {"GOCLUSTER_KAFKA_BOOTSTRAP": kafka_broker.bootstrap},
        ("run",),
        name="sasl-refused",
        log_dir=tmp_path,
    )
    redacted_url = with_password(secret_db_url, "PW").replace("PW", REDACTED)
    # A plaintext listener answers a SASL handshake with an error: Apache Kafka's
    # IllegalSaslState, Tansu's UnsupportedSaslMechanism.
    refusal = (
        "UnsupportedSaslMechanism" if kafka_broker.name == "Tansu" else "IllegalSaslStateError"
    )
    failures = {closed: "ECONNREFUSED", refused: refusal}
    with closed, refused:
        for service, failure in failures.items():
            config = service.wait_for_log("gocluster starting", timeout_s=30)["config"]
            assert config["database_url"] == redacted_url
            assert config["kafka_sasl_password"] == REDACTED
            wait_until(
                lambda s=service, f=failure: f in s.stdout + s.stderr,
                30,
                f"{service.name}: {failure}",
            )
        for service in failures:  # both stop at once: each takes its time
            os.kill(service.pid, signal.SIGTERM)
        for service in failures:
            # One SIGTERM each: a second one may land while Python is finalising, and kill.
            assert service.process is not None
            service.process.wait(timeout=90)
            code = service.terminate()
            assert code == 0, f"exit {code}\n{service.tail()}"
    for service in failures:
        assert service.count("gocluster stopped") == 1
        assert not leaks(service.stdout + service.stderr), service.tail()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        # Nothing listens there.
        (f"postgresql://postgres:{DB_SECRET}@127.0.0.1:{closed_port()}/postgres", "refused"),
        # Trust authentication, but no such role: the server refuses the login.
        (f"postgresql://nobody-here:{DB_SECRET}@127.0.0.1:5432/postgres", "nobody-here"),
    ],
    ids=["closed-port", "unknown-role"],
)
def test_replay_against_an_unusable_database_fails_in_one_line_without_the_password(
    url: str, says: str
) -> None:
    done = run_cli(
        ["replay", "-"], service_env({"GOCLUSTER_DATABASE_URL": url}), stdin="{}\n", check=False
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"Error: database {url.replace(DB_SECRET, '***')}" in done.stderr
    assert says in done.stderr
    assert not leaks(done.stdout + done.stderr)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"GOCLUSTER_DATABASE_URL": f"postgresql://gc:{DB_SECRET}@db:54x2/gc"}, "DATABASE_URL"),
        # An unencoded '@' in the password: the rest of it would have been the "host".
        ({"GOCLUSTER_DATABASE_URL": f"postgresql://gc:pa@{DB_SECRET}@db/gc"}, "DATABASE_URL"),
        (
            {"GOCLUSTER_DATABASE_URL": f"postgresql://gc:pa@ss:{DB_SECRET}@db:5432/gc"},
            "DATABASE_URL",
        ),
        ({"GOCLUSTER_DATABASE_URL": f"mysql://gc:{DB_SECRET}@db/gc"}, "DATABASE_URL"),
        ({"GOCLUSTER_KAFKA_SASL_PASSWORD": SASL_SECRET}, "KAFKA_SECURITY_PROTOCOL"),
        (SASL_ENV | {"GOCLUSTER_KAFKA_SASL_MECHANISM": "MD5"}, "KAFKA_SASL_MECHANISM"),
        (SASL_ENV | {"GOCLUSTER_KAFKA_SASL_USERNAME": ""}, "KAFKA_SASL_USERNAME"),
    ],
    ids=[
        "bad-port",
        "unencoded-at",
        "unencoded-at-and-colon",
        "other-dialect",
        "sasl-password-without-sasl",
        "unknown-mechanism",
        "no-username",
    ],
)
def test_a_configuration_error_names_the_variable_and_shows_no_secret(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str
) -> None:
    for name in [n for n in os.environ if n.upper().startswith("GOCLUSTER_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as error:
        Settings()
    message = config_problems(error.value)
    assert f"GOCLUSTER_{variable}" in message
    assert "GOCLUSTER_:" not in message
    assert not leaks(message)
    assert not leaks(str(error.value))
    assert not leaks(repr(error.value))


def test_gocluster_run_with_a_bad_setting_prints_it_in_one_line_without_the_secret() -> None:
    env = service_env(
        {"GOCLUSTER_DATABASE_URL": f"postgresql://gc:pa@ss{DB_SECRET}@db:5432/gc"}, SASL_ENV
    )
    done = run_cli(["run"], env, check=False, timeout_s=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "GOCLUSTER_DATABASE_URL" in done.stderr
    assert not leaks(done.stdout + done.stderr)


# -- 2. secrets in DLQ records and errors ---------------------------------------------------


def bad_records() -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    event = b.withdrawn(DAY, cluster_id="sec-1")
    wrong_type = {**event, "type": "gocluster.application.resubmitted"}
    conflict = copy.deepcopy(event)
    conflict["data"]["cluster_id"] = "sec-2"
    return [
        (b"sec-1", b"\xff not json", list(STRUCTURED_HEADERS)),
        (b"sec-1", b'{"specversion": "1.0"}', list(STRUCTURED_HEADERS)),
        (b"sec-1", structured_value(wrong_type), list(STRUCTURED_HEADERS)),
        (b"sec-1", structured_value(conflict), list(STRUCTURED_HEADERS)),
        (b"other", structured_value(event), list(STRUCTURED_HEADERS)),
        (b"sec-1", b"{}", [("ce_id", b"1"), ("ce_b@d", b"x")]),
    ]


@pytest.mark.kafka
def test_dlq_records_and_logs_of_a_service_with_a_database_password_never_contain_it(
    secret_db_url: str, kafka_topics: KafkaTopics, tmp_path: Path
) -> None:
    migrate(secret_db_url)
    records = bad_records()
    produce(kafka_topics.bootstrap, kafka_topics.applications, records)
    env = service_env(kafka_topics.env(), {"GOCLUSTER_DATABASE_URL": secret_db_url})
    with ServiceProcess(env, log_dir=tmp_path) as service:
        dlq = read_topics(kafka_topics.bootstrap, [kafka_topics.dlq], len(records), timeout_s=60)
        assert service.terminate() == 0, service.tail()
    assert len(dlq) == len(records)
    assert {header(r, "error.class") for r in dlq} == {
        "decode",
        "schema",
        "unknown_type",
        "conflict",
    }
    for record in dlq:
        assert not leaks(record.key or b""), record
        assert not leaks(record.value or b""), record
        assert not leaks(b"".join(name.encode() + value for name, value in record.headers)), record
    assert not leaks(service.stdout + service.stderr)


def test_rejections_made_while_secrets_are_configured_never_contain_them(
    secret_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The composition root with both secrets set: what it writes to the DLQ is free of them."""
    migrate(secret_db_url)
    for name, value in {**SASL_ENV, "GOCLUSTER_DATABASE_URL": secret_db_url}.items():
        monkeypatch.setenv(name, value)
    app = build(Settings())
    try:
        items = [
            decode(ConsumerRecord("t", 0, None, n, 0, 0, k, v, h, None, -1, -1, -1), 10_000)
            for n, (k, v, h) in enumerate(bad_records())
        ]
        result = app.workflow.apply_batch(items)
    finally:
        app.close()
    assert len(result.rejections) == len(items)
    for rejection in result.rejections:
        origin = RecordOrigin.from_json(rejection.origin)
        _, _, headers = dlq_record(origin, rejection.error_class.value, rejection.message)
        assert not leaks(rejection.message)
        assert not leaks(b"".join(value for _, value in headers))


def test_a_database_error_the_consumer_would_log_does_not_contain_the_password(
    policy: Policy,
) -> None:
    url = f"postgresql://postgres:{DB_SECRET}@127.0.0.1:{closed_port()}/postgres"
    engine = create_db_engine(url)
    workflow = Workflow(engine, policy, FixedClock(b.noon(DAY)), "/t")
    event = b.withdrawn(b.noon(DAY))
    record = ConsumerRecord(
        "t", 0, None, 0, 0, 0, b"cluster-automotive", structured_value(event), [], None, -1, -1, -1
    )
    try:
        with pytest.raises(SQLAlchemyError) as error:
            workflow.apply_batch([decode(record, 10_000)])
    finally:
        engine.dispose()
    assert "refused" in str(error.value)
    assert not leaks(str(error.value))
    assert not leaks(repr(error.value))
    assert not leaks(str(error.value.__cause__))


# -- 3. all SQL is parametrised --------------------------------------------------------------

SQL_SINKS = {"text", "exec_driver_sql", "execute", "executemany", "executescript", "literal_column"}
# (file, the sink's first argument as source) -> why it is safe
ALLOWED_DYNAMIC_SQL: dict[tuple[str, str], str] = {
    ("workflows/store/bulk.py", "sql"): "the string SQLAlchemy compiles from insert(table) "
    "for a table and its column names: no text from any input; the values are parameters",
}
SCANNED = ("workflows", "consumers", "schemas")


def _dynamic(node: ast.expr, dynamic_names: set[str]) -> str | None:
    """Why this expression is SQL text built at run time, or None if it is not."""
    if isinstance(node, ast.JoinedStr):
        return "an f-string"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return "string concatenation or %-formatting"
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"format", "join", "replace"}
    ):
        return f"str.{node.func.attr}()"
    if isinstance(node, ast.Name) and node.id in dynamic_names:
        return f"the variable {node.id}, which is built by formatting"
    return None


def _sink(call: ast.Call) -> str | None:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name if name in SQL_SINKS else None


def unparametrised_sql(source: str, file: str, allowed: Any = ALLOWED_DYNAMIC_SQL) -> list[str]:
    """Each place where formatted text reaches a SQL sink, or literal binds are rendered."""
    tree = ast.parse(source)
    found: list[str] = []
    for scope in ast.walk(tree):
        if not isinstance(scope, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        dynamic_names = {
            target.id
            for node in ast.walk(scope)
            if isinstance(node, ast.Assign) and _dynamic(node.value, set())
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(scope):
            if not isinstance(node, ast.Call):
                continue
            for keyword in node.keywords:
                if keyword.arg == "compile_kwargs" and "literal_binds" in ast.unparse(keyword):
                    found.append(f"{file}:{node.lineno}: literal_binds renders values into SQL")
            sink = _sink(node)
            if sink is None or not node.args:
                continue
            argument = node.args[0]
            why = _dynamic(argument, dynamic_names)
            literal = isinstance(argument, ast.Constant) and isinstance(argument.value, str)
            if (
                why is None
                and sink in {"text", "exec_driver_sql", "literal_column"}
                and not literal
            ):
                why = "not a string literal"
            if why and (file, ast.unparse(argument)) not in allowed:
                found.append(f"{file}:{node.lineno}: {sink}() gets {why}: {ast.unparse(argument)}")
    return sorted(set(found))


def source_files() -> Iterator[tuple[str, str]]:
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path.read_text("utf-8")


def test_no_formatted_text_reaches_a_sql_statement() -> None:
    files = list(source_files())
    assert len(files) > 20  # the scan sees the code
    problems = [p for file, source in files for p in unparametrised_sql(source, file)]
    assert problems == []


def test_the_sql_allowlist_names_only_places_that_exist() -> None:
    """An allowlist entry whose code is gone would silently allow the next one."""
    for file, argument in ALLOWED_DYNAMIC_SQL:
        found = unparametrised_sql((ROOT / file).read_text("utf-8"), file, allowed={})
        assert any(problem.endswith(f": {argument}") for problem in found), (file, argument)


@pytest.mark.parametrize(
    "snippet",
    [
        "conn.execute(text(f\"SELECT * FROM clusters WHERE cluster_id = '{cid}'\"))",
        'conn.execute(text("SELECT * FROM t WHERE id = " + cid))',
        'conn.execute(text("SELECT * FROM t WHERE id = %s" % cid))',
        'conn.exec_driver_sql("DELETE FROM t WHERE id = {}".format(cid))',
        'def f(cid):\n    q = f"DROP TABLE {cid}"\n    cursor.execute(q)',
        "conn.execute(text(query))",
        "conn.execute(stmt.compile(compile_kwargs={'literal_binds': True}))",
        'select(literal_column(f"{name}"))',
    ],
)
def test_the_sql_scan_finds_formatted_sql(snippet: str) -> None:
    assert unparametrised_sql(snippet, "snippet.py")


@pytest.mark.parametrize(
    "snippet",
    [
        "conn.execute(select(clusters).where(clusters.c.cluster_id == cid))",
        'conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})',
        "conn.execute(insert(inbox), rows)",
        'conn.exec_driver_sql("BEGIN IMMEDIATE")',
    ],
)
def test_the_sql_scan_passes_bound_parameters(snippet: str) -> None:
    assert unparametrised_sql(snippet, "snippet.py") == []


NASTY = "'; DROP TABLE clusters; -- %s %(x)s :name ? $1 \\ \" `"


def test_sql_metacharacters_in_ids_names_and_sources_round_trip_unchanged(
    workflow: Workflow,
) -> None:
    cluster = "cluster-sql"
    day = DAY
    submitted = b.submitted(day, cluster_id=cluster, event_id=f"{NASTY} id")
    # A URI-reference keeps the metacharacters it allows and percent-encodes the rest.
    submitted["source"] = "/portal/" + urllib.parse.quote(NASTY, safe="'();$:?=&*+,!@")
    submitted["data"]["cluster_name"] = f"Robert'); DROP TABLE inbox;-- {NASTY}"
    submitted["data"]["organisation"] = NASTY
    assessed = b.assessed(day, cluster_id=cluster, event_id=f"{NASTY} assessed")
    interview = f"iv' OR '1'='1 {NASTY}"
    bronze = b.bronze(day, cluster_id=cluster, interview_id=interview, event_id=f"{NASTY} bronze")
    items = [Inbound({"kind": "line"}, event=b.typed(e)) for e in (submitted, assessed, bronze)]

    result = workflow.apply_batch(items)
    again = workflow.apply_batch(items[:1])

    assert [o.outcome for o in result.outcomes] == ["applied"] * 3
    assert [o.outcome for o in again.outcomes] == ["duplicate"]
    causes = {o["data"]["cause_id"] for o in result.outputs}
    assert {submitted["id"], assessed["id"], bronze["id"]} <= causes
    (award,) = [o for o in result.outputs if o["type"] == "gocluster.label.awarded"]
    assert award["data"]["interview_id"] == interview
    with workflow.db.connect() as conn:
        assert set(inspect(conn).get_table_names()) >= {"clusters", "inbox", "outbox", "labels"}
        assert conn.execute(select(func.count()).select_from(clusters)).scalar_one() == 1
        stored = set(conn.execute(select(inbox.c.source, inbox.c.event_id)))
        assert (submitted["source"], submitted["id"]) in stored
        assert conn.execute(select(labels.c.interview_id)).scalar_one() == interview
        view = queries.cluster_view(conn, cluster)
    assert view is not None
    assert view["cluster"]["cluster_name"] == submitted["data"]["cluster_name"]
    assert view["cluster"]["organisation"] == NASTY
    assert [h["cause_id"] for h in view["history"]][:1] == [submitted["id"]]


# -- 4. configuration and policy errors, as an operator sees them ------------------------------


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"GOCLUSTER_KAFKA_SECURITY_PROTOCOL": "TLS"}, "GOCLUSTER_KAFKA_SECURITY_PROTOCOL"),
        ({"GOCLUSTER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "GOCLUSTER_KAFKA_SASL_MECHANISM"),
        ({"GOCLUSTER_MAX_RECORD_BYTES": "1MB"}, "GOCLUSTER_MAX_RECORD_BYTES"),
    ],
    ids=["unknown-protocol", "sasl-without-mechanism", "not-a-number"],
)
def test_gocluster_run_with_a_bad_setting_exits_non_zero_naming_the_variable(
    env: dict[str, str], names: str
) -> None:
    done = run_cli(["run"], service_env(env), check=False, timeout_s=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("Error: configuration:")]
    assert names in line
    assert "GOCLUSTER_:" not in line


def test_gocluster_run_with_a_bad_policy_file_exits_non_zero_naming_the_key(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    bundled = (ROOT / "workflows" / "policy.yaml").read_text("utf-8")
    policy.write_text(bundled.replace("park_ttl:", "park_ttl_typo: P1D\npark_ttl:", 1), "utf-8")
    assert policy.read_text("utf-8") != bundled
    env = service_env(
        {
            "GOCLUSTER_POLICY": str(policy),
            "GOCLUSTER_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
            "GOCLUSTER_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed_port()}",
        }
    )
    done = run_cli(["run"], env, check=False, timeout_s=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "park_ttl_typo" in done.stderr
    assert str(policy) in done.stderr


def test_a_misspelt_variable_is_warned_about(tmp_path: Path) -> None:
    env = service_env(
        {
            "GOCLUSTER_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
            "GOCLUSTER_TOPIC_APLICATIONS": "typo",
        }
    )
    done = run_cli(["replay", "-"], env, stdin="")
    warnings = [json.loads(x) for x in done.stderr.splitlines() if "unknown GOCLUSTER_" in x]
    assert [w["names"] for w in warnings] == [["GOCLUSTER_TOPIC_APLICATIONS"]]
    assert done.stdout == ""


def test_an_unsupported_database_or_a_misencoded_password_is_a_configuration_error() -> None:
    for url, reason in [
        ("mysql://gc@db/gc", "not supported"),
        ("postgresql://gc:p@ss@db/gc", "%40"),
        ("postgresql://gc:pw@db:port/gc", "not a SQLAlchemy database URL"),
    ]:
        with pytest.raises(ValidationError, match=reason):
            Settings(database_url=url)
    assert Settings(database_url="postgres://gc@db/gc").database_url == "postgres://gc@db/gc"


# -- 5. files on disk ----------------------------------------------------------------------------


def test_the_sqlite_database_is_created_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Whatever the umask: the file holds every event the producers sent."""
    path = tmp_path / "gocluster.db"
    old_umask = os.umask(0o022)
    try:
        engine = create_db_engine(f"sqlite:///{path}")
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        finally:
            engine.dispose()
    finally:
        os.umask(old_umask)

    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
    assert modes["gocluster.db"] == oct(0o600)
    assert all(mode == oct(0o600) for mode in modes.values()), modes


def test_the_systemd_unit_keeps_new_files_private() -> None:
    unit = (ROOT / "deploy" / "gocluster.service").read_text("utf-8")
    assert "\nUMask=0077\n" in unit
