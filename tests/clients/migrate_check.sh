#!/usr/bin/env bash
# node-pg-migrate through pgmux: a migration tool that holds a session-level advisory lock across
# many statements and transactions, and sets search_path outside any transaction.
#
# usage: DATABASE_URL=postgres://user:pass@host:port/db tests/clients/migrate_check.sh
#
# It drops and recreates the schema pgmux_migrate (the migrated tables mig_a and mig_b and the
# migrations table pgmux_migrate.migrations live there), then starts two `node-pg-migrate up` runs
# at once. node-pg-migrate takes its lock with pg_try_advisory_lock, so the run that finds it
# taken exits with "Another migration is already running"; that run is retried until it gets
# the lock (for up to 30 s) and must then find nothing to do. A third run must find nothing to
# do. It then checks what the database holds, that the lock is not left held, and prints
#   MIGRATE_OK applied=<rows in the migrations table>
# node-pg-migrate comes from tests/clients/setup (target/clients, or $PGMUX_CLIENTS_DIR).
# Exits non-zero, with the runs' output, on any failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dest=${PGMUX_CLIENTS_DIR:-$root/target/clients}
migrate=$dest/node_modules/.bin/node-pg-migrate
migrations=$here/migrations
schema=pgmux_migrate
table=migrations
lock_wait_s=30 # how long a run that finds the lock taken keeps retrying
run_s=20       # the bound on one node-pg-migrate or query run
# node-pg-migrate's advisory lock key (PG_MIGRATE_LOCK_ID in its runner).
lock_key=7241865325823964

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

dump_logs() {
    local log
    for log in "$work"/*.log; do
        [ -f "$log" ] || continue
        echo "--- ${log##*/}"
        cat "$log"
    done >&2
}

fail() {
    echo "migrate_check: $*" >&2
    dump_logs
    exit 1
}

[ -n "${DATABASE_URL:-}" ] || fail "DATABASE_URL is not set"
[ -x "$migrate" ] || fail "no $migrate: run tests/clients/setup"
command -v timeout >/dev/null || fail "needs timeout (coreutils)"

# The migrations, in the order node-pg-migrate runs them (by their numeric prefix).
files=("$migrations"/*.js)
[ -f "${files[0]}" ] || fail "no migrations in $migrations"
expected_names=
for f in "${files[@]}"; do
    name=${f##*/}
    expected_names+=${expected_names:+,}${name%.js}
done

# sql QUERY: runs QUERY with node-postgres and prints the first column of its first row, if any.
sql_js='
const { Client } = require("pg");
const client = new Client({ connectionString: process.env.DATABASE_URL });
(async () => {
  await client.connect();
  try {
    const res = await client.query(process.argv[1]);
    const last = Array.isArray(res) ? res[res.length - 1] : res;
    if (last.rows.length > 0) console.log(String(Object.values(last.rows[0])[0]));
  } finally {
    await client.end();
  }
})().catch((err) => {
  console.error(`query failed: ${err.message}: ${process.argv[1]}`);
  process.exit(1);
});
'
sql() {
    NODE_PATH="$dest/node_modules" timeout "$run_s" node -e "$sql_js" "$1"
}

# up LOG: one `node-pg-migrate up`, its output in $work/LOG.log. Runs in $work so that nothing
# in the caller's directory (.env, config/) is picked up.
up() {
    (
        cd "$work"
        timeout "$run_s" "$migrate" up \
            --migrations-dir "$migrations" \
            --schema "$schema" --create-schema \
            --migrations-table "$table"
    ) >"$work/$1.log" 2>&1
}

# up_until_locked NAME: `up`, retried while the lock is taken (bounded by lock_wait_s). The
# successful attempt's output ends up in $work/NAME.log, the number of attempts in NAME.tries.
up_until_locked() {
    local name=$1 try=1 rc deadline=$((SECONDS + lock_wait_s))
    while :; do
        rc=0
        up "$name.$try" || rc=$?
        if [ "$rc" = 0 ]; then
            mv "$work/$name.$try.log" "$work/$name.log"
            echo "$try" >"$work/$name.tries"
            return 0
        fi
        if [ "$rc" = 124 ]; then
            echo "migrate_check: $name: node-pg-migrate ran past ${run_s}s (attempt $try)" >&2
            return 1
        fi
        if ! grep -q 'Another migration is already running' "$work/$name.$try.log"; then
            echo "migrate_check: $name: node-pg-migrate failed (exit $rc, attempt $try)" >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "migrate_check: $name: lock still taken after ${lock_wait_s}s ($try attempts)" >&2
            return 1
        fi
        rm "$work/$name.$try.log" # only the last attempt's output is shown on failure
        sleep 0.5
        try=$((try + 1))
    done
}

# applied_in LOG: how many migrations that run applied.
applied_in() {
    grep -c '^### MIGRATION .* (UP) ###' "$work/$1.log" || true
}

# node-pg-migrate only warns, and exits 0, when pg_advisory_unlock returns false (which is what
# happens when the unlock reaches a different server session than the lock did).
check_unlocked() {
    if grep -q 'Failed to release migration lock' "$work/$1.log"; then
        fail "$1: node-pg-migrate could not release its advisory lock"
    fi
}

sql "DROP SCHEMA IF EXISTS \"$schema\" CASCADE" >/dev/null || fail "could not drop schema $schema"

up_until_locked first &
first=$!
up_until_locked second &
second=$!
rc=0
wait "$first" || rc=1
wait "$second" || rc=1
[ "$rc" = 0 ] || fail "the concurrent runs failed"
check_unlocked first
check_unlocked second

applied_first=$(applied_in first)
applied_second=$(applied_in second)
if [ $((applied_first + applied_second)) != "${#files[@]}" ]; then
    fail "the concurrent runs applied $applied_first and $applied_second migrations, not ${#files[@]} in all"
fi
busy=$(($(cat "$work/first.tries") - 1 + $(cat "$work/second.tries") - 1))
echo "migrate_check: concurrent runs applied $applied_first and $applied_second migrations;" \
    "$busy attempt(s) found the lock taken"

rc=0
up third || rc=$?
[ "$rc" = 0 ] || fail "third run failed (exit $rc)"
check_unlocked third
grep -q 'No migrations to run!' "$work/third.log" || fail "third run did not report 'No migrations to run!'"
[ "$(applied_in third)" = 0 ] || fail "third run applied migrations"

names=$(sql "SELECT string_agg(name, ',' ORDER BY id) FROM \"$schema\".\"$table\"") \
    || fail "could not read $schema.$table"
[ "$names" = "$expected_names" ] || fail "$schema.$table holds [$names], not [$expected_names]"
rows=$(sql "SELECT count(*) FROM \"$schema\".mig_a") || fail "could not read $schema.mig_a"
[ "$rows" = 1 ] || fail "$schema.mig_a has $rows rows, not 1"
mig_b=$(sql "SELECT to_regclass('\"$schema\".mig_b') IS NOT NULL") || fail "could not look for mig_b"
[ "$mig_b" = true ] || fail "no table $schema.mig_b"
held=$(sql "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
            AND ((classid::bigint << 32) | objid::bigint) = $lock_key") \
    || fail "could not read pg_locks"
[ "$held" = 0 ] || fail "node-pg-migrate's advisory lock is still held ($held)"
applied=$(sql "SELECT count(*) FROM \"$schema\".\"$table\"") || fail "could not count $schema.$table"

echo "MIGRATE_OK applied=$applied"
