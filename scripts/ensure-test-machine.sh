#!/usr/bin/env bash
# Everything the test suite needs beside the Python virtualenv, made present and running.
#
# - Debian packages (PostgreSQL server, kcat, Chromium, promtool): installed with apt-get
#   when missing and this runs as root (a fresh CI machine); elsewhere a missing one stops
#   the run with one line naming it.
# - PostgreSQL on 127.0.0.1:5432, started when down, with the login role the tests use
#   (GOCLUSTER_TEST_PG_USER / GOCLUSTER_TEST_PG_PASSWORD, default gocluster/gocluster,
#   CREATEDB: every test creates and drops databases of its own; CREATEROLE: the security
#   tests log in as a role with a password of their own; pg_signal_backend: dropping a test
#   database WITH (FORCE) must also end an autovacuum worker that happens to be in it).
# - Java and Maven for Apache Kafka, whose jars scripts/apache-kafka fetches once into a
#   cache outside the repository.
# - The AsyncAPI parser for docs/asyncapi.yaml: Node.js and npm present, `npm ci` in
#   scripts/asyncapi-check when its node_modules is missing or older than its lock.
#
# Idempotent: when everything is there it only checks, in well under a second (plus the
# jar check). Usage: scripts/ensure-test-machine.sh
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "ensure-test-machine: $*" >&2; }
fail() { say "$*"; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

PG_USER="${GOCLUSTER_TEST_PG_USER:-gocluster}"
PG_PASSWORD="${GOCLUSTER_TEST_PG_PASSWORD:-gocluster}"

# command -> Debian package providing it
declare -A PACKAGES=(
  [pg_ctlcluster]=postgresql
  [kcat]=kcat
  [chromium]=chromium
  [promtool]=prometheus
)

missing=()
for command in "${!PACKAGES[@]}"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${PACKAGES[$command]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if is_root && command -v apt-get >/dev/null 2>&1; then
    say "installing from Debian's packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
    # The prometheus package starts its server where it can; the tests only need promtool.
    if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v service >/dev/null 2>&1; then
      service prometheus stop >/dev/null 2>&1 || true
    fi
  else
    fail "missing Debian package(s): ${missing[*]} (install them: sudo apt-get install ${missing[*]})"
  fi
fi

for tool in java mvn; do
  command -v "$tool" >/dev/null 2>&1 \
    || fail "$tool not found: Apache Kafka for the tests needs a JDK 17+ and Maven (apt-get install openjdk-17-jdk-headless maven)"
done

# -- PostgreSQL ----------------------------------------------------------------------------
pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
pg_login() {
  local ok
  ok=$(PGPASSWORD="$PG_PASSWORD" psql -h 127.0.0.1 -p 5432 -U "$PG_USER" -d postgres -qtAc \
    "SELECT rolcreatedb AND rolcreaterole AND pg_has_role(current_user, 'pg_signal_backend', 'USAGE')
       FROM pg_roles WHERE rolname = current_user" 2>/dev/null)
  [ "$ok" = "t" ]
}
as_postgres() { if is_root; then runuser -u postgres -- "$@"; else sudo -n -u postgres "$@"; fi; }

if ! pg_ready; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  [ -n "$version" ] || fail "no PostgreSQL cluster under /etc/postgresql (pg_createcluster --start 15 main)"
  if is_root; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  else
    fail "PostgreSQL is not running on 127.0.0.1:5432 (start it: sudo pg_ctlcluster $version main start)"
  fi
  for _ in $(seq 1 60); do pg_ready && break; sleep 0.5; done
  pg_ready || fail "PostgreSQL did not come up on 127.0.0.1:5432 (see /var/log/postgresql/)"
fi

if ! pg_login; then
  as_postgres psql -qtA -v ON_ERROR_STOP=1 -v user="$PG_USER" -v password="$PG_PASSWORD" <<'SQL' >/dev/null \
    || fail "cannot create the test role '$PG_USER' (needs root or sudo to the postgres user); create it with: CREATE ROLE $PG_USER LOGIN CREATEDB CREATEROLE PASSWORD '...'; GRANT pg_signal_backend TO $PG_USER"
SELECT format('CREATE ROLE %I LOGIN CREATEDB CREATEROLE PASSWORD %L', :'user', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB CREATEROLE PASSWORD %L', :'user', :'password') \gexec
SELECT format('GRANT pg_signal_backend TO %I', :'user') \gexec
SQL
  pg_login || fail "role '$PG_USER' cannot log in on 127.0.0.1:5432 with its password (check pg_hba.conf: host ... scram-sha-256)"
fi

# -- Apache Kafka's jars -------------------------------------------------------------------
scripts/apache-kafka fetch >/dev/null

# -- The AsyncAPI parser (npm) that checks docs/asyncapi.yaml ------------------------------
# `npm ci` from the pinned lock when node_modules is missing or older than the lock. No
# install scripts: the parser needs none (and one of its dependencies would report usage).
for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 \
    || fail "$tool not found: the AsyncAPI check needs Node.js 20+ with npm (apt-get install nodejs npm)"
done
ASYNCAPI_CHECK=scripts/asyncapi-check
if [ ! -f "$ASYNCAPI_CHECK/node_modules/.package-lock.json" ] \
  || [ "$ASYNCAPI_CHECK/package-lock.json" -nt "$ASYNCAPI_CHECK/node_modules/.package-lock.json" ]; then
  say "installing the AsyncAPI parser (npm ci in $ASYNCAPI_CHECK)"
  (cd "$ASYNCAPI_CHECK" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null) \
    || fail "npm ci in $ASYNCAPI_CHECK failed (run it there to see why)"
fi
