# Sourced by the bench scripts: a throwaway PostgreSQL on 127.0.0.1 and the poolers in front of
# it (pgmux from this repository's release build, PgBouncer when one is found), all in one
# temporary directory and all stopped when the script exits.
#
# After sourcing: $repo, $bindir, $pgmux, $pgbouncer (empty when none), $work, and the
# functions below. Set PGBOUNCER=/path/to/pgbouncer to pick one, PGMUX=/path/to/pgmux for a pgmux
# other than the release build.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -x "$bindir/initdb" ] || { echo "PostgreSQL binaries not found (apt-get install -y postgresql)" >&2; exit 1; }
pgbouncer=${PGBOUNCER:-$(command -v pgbouncer || true)}
pgmux=${PGMUX:-$repo/target/release/pgmux}
[ -x "$pgmux" ] || { echo "build pgmux first: cargo build --release" >&2; exit 1; }

work=$(mktemp -d -t "pgmux-$(basename "$(dirname "$0")").XXXXXX")
chmod 755 "$work"
pids=()
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    as_pg "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_postgres [postgres -c settings...]: initdb (trust auth) and start; sets $pg_port.
start_postgres() {
    pg_port=$(free_port)
    mkdir -p "$work/data"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$work"
    as_pg "$bindir/initdb" -D "$work/data" -U postgres -A trust --no-sync >/dev/null
    as_pg "$bindir/pg_ctl" -D "$work/data" -l "$work/postgres.log" -w \
        -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c fsync=off $*" start >/dev/null
}

# start_pgmux POOL_SIZE MAX_CLIENT_CONN: pgmux in transaction mode, trust auth, for database
# postgres, with the hard file-descriptor limit; sets $pooler_pid and $pooler_port.
start_pgmux() {
    local port
    port=$(free_port)
    cat > "$work/pgmux.toml" <<TOML
[pgmux]
listen_addr = "127.0.0.1"
listen_port = $port
pool_mode = "transaction"
default_pool_size = $1
max_client_conn = $2
auth_type = "trust"

[databases.postgres]
host = "127.0.0.1"
port = $pg_port
user = "postgres"
TOML
    (ulimit -n "$(ulimit -Hn)"; exec "$pgmux" --config "$work/pgmux.toml") > "$work/pgmux.log" 2>&1 &
    pids+=($!)
    pooler_pid=$!
    pooler_port=$port
}

# start_pgbouncer POOL_SIZE MAX_CLIENT_CONN: the same setup in PgBouncer, as the postgres OS
# user when run as root; sets $pooler_pid and $pooler_port.
start_pgbouncer() {
    local port
    port=$(free_port)
    cat > "$work/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$pg_port user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
auth_type = trust
auth_file = $work/users.txt
pool_mode = transaction
default_pool_size = $1
max_client_conn = $2
logfile = $work/pgbouncer.log
INI
    echo '"postgres" ""' > "$work/users.txt"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$work/pgbouncer.ini" "$work/users.txt"
        runuser -u postgres -- sh -c "ulimit -n \$(ulimit -Hn); exec '$pgbouncer' '$work/pgbouncer.ini'" > /dev/null 2>&1 &
    else
        (ulimit -n "$(ulimit -Hn)"; exec "$pgbouncer" "$work/pgbouncer.ini") > /dev/null 2>&1 &
    fi
    pids+=($!)
    sleep 1
    pooler_pid=$(pgrep -n -f "$work/pgbouncer.ini")
    pooler_port=$port
}
