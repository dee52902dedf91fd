#!/bin/bash
# The claim/complete cycle without a worker process: the database's share of the queue's work, next to a no-op
# SKIP LOCKED loop on the same server (BENCHMARKS.md, issue 4). Creates and drops the database leadscore_pgbench.
#   crates/bench/pgbench/run.sh [ROUNDS] [SECONDS]      PGOPTIONS="-c synchronous_commit=off" to try async commit
set -euo pipefail
cd "$(dirname "$0")"
rounds=${1:-2} secs=${2:-10}
host=${PGHOST:-127.0.0.1} user=${PGUSER:-postgres} db=leadscore_pgbench
psql -h "$host" -U "$user" -d postgres -qc "drop database if exists $db" -c "create database $db"
q() { psql -h "$host" -U "$user" -d "$db" -Atq "$@"; }
for r in $(seq 1 "$rounds"); do
    for v in noop update delete; do
        q -f schema.sql -f cycles.sql >/dev/null 2>&1
        q -c checkpoint
        l0=$(q -c "select pg_current_wal_lsn()")
        out=$(pgbench -h "$host" -U "$user" -n -c 2 -j 2 -T "$secs" -f "$v.sql" "$db" 2>/dev/null)
        cycles=$(echo "$out" | grep -oP 'processed: \K[0-9]+')
        wal=$(q -c "select pg_wal_lsn_diff(pg_current_wal_lsn(), '$l0')")
        echo "round $r  $v  jobs/s $((cycles * 64 / secs))  WAL bytes/job $(echo "$wal / ($cycles * 64)" | bc)"
    done
done
psql -h "$host" -U "$user" -d postgres -qc "drop database $db"
