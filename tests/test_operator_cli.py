"""What an operator on call meets at the command line: `tick` without a broker, the
superseded GOCLUSTER_METRICS_PORT, and demo lines that are never cut mid-word."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from consumers.config import Settings
from consumers.demo import Watcher, clip
from tests.http_probe import free_port
from tests.service_process import run_cli, service_env


def test_tick_without_a_broker_fails_fast_with_one_line_suggesting_no_publish(
    sqlite_url: str,
) -> None:
    env = service_env(
        {
            "GOCLUSTER_DATABASE_URL": sqlite_url,
            "GOCLUSTER_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",  # nothing listens
        }
    )
    began = time.monotonic()
    done = run_cli(["tick", "--now", "2027-09-10T00:00:00Z"], env, check=False)
    elapsed = time.monotonic() - began

    assert done.returncode == 1
    assert elapsed < 30, f"tick took {elapsed:.0f} s to give up"
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr  # no kafka-python retry lines
    assert errors[0].startswith("Error: no broker answers at 127.0.0.1:")
    assert "--no-publish" in errors[0]
    # Nothing fired: with --no-publish the same tick then does its work.
    fired = run_cli(["tick", "--now", "2027-09-10T00:00:00Z", "--no-publish"], env)
    assert fired.returncode == 0


def test_metrics_port_is_read_as_the_http_port_and_both_set_differently_is_an_error() -> None:
    assert Settings().http_address() is None
    assert Settings(metrics_port=9100).http_address() == ("127.0.0.1", 9100)
    assert Settings(metrics_port=9100, metrics_host="0.0.0.0").http_address() == (  # noqa: S104
        "0.0.0.0",  # noqa: S104
        9100,
    )
    assert Settings(http_port=8080, http_host="127.0.0.2").http_address() == ("127.0.0.2", 8080)
    assert Settings(http_port=8080, metrics_port=8080).http_address() == ("127.0.0.1", 8080)
    with pytest.raises(ValidationError, match="superseded by http_port"):
        Settings(http_port=8080, metrics_port=9100)


@pytest.mark.parametrize(
    "text",
    [
        "record value is not JSON: Expecting property name enclosed in double quotes at char 1",
        "short",
        "x" * 120,
    ],
)
def test_demo_lines_are_clipped_between_words_never_inside_one(text: str) -> None:
    clipped = clip(text, 70)
    kept = clipped.removesuffix(" …")
    assert text.startswith(kept)
    rest = text[len(kept) :]
    assert rest == "" or rest[0] == " " or kept[-1] in " ,;:"
    if " " in text[:70] and len(text) > 70:
        assert len(clipped) <= 72


def test_the_demo_prints_what_arrived_in_business_time_order_dlq_records_last(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def output(kind: str, at: str, data: dict[str, object]) -> SimpleNamespace:
        value = json.dumps({"type": f"gocluster.{kind}", "time": at, "data": data}).encode()
        return SimpleNamespace(topic="gocluster.x", value=value, headers=[])

    watcher = Watcher.__new__(Watcher)  # no broker: only the printing is under test
    watcher.seen, watcher.pending = [], []
    dlq = SimpleNamespace(topic="gocluster.dlq", value=b"", headers=[("error.class", b"decode")])
    # Arrival order: the DLQ, then the award, then the two membership changes, reversed.
    for record in (
        dlq,
        output("label.awarded", "2025-11-20T00:00:00+01:00", {"level": "bronze"}),
        output("membership.changed", "2025-09-04T00:00:00+02:00", {"from": "a", "to": "b"}),
        output("membership.changed", "2025-05-12T09:30:00+02:00", {"from": None, "to": "a"}),
    ):
        watcher._print(record)
    watcher.flush()

    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["2025-05-12", "2025-09-04", "2025-11-20", "-"]
