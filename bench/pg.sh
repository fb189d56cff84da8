#!/usr/bin/env bash
# Two release hubs on the PostgreSQL database hub_perf (see bench/cluster.sh).
#   psql -h 127.0.0.1 -U postgres -c 'create database hub_perf'
#   bench/pg.sh cluster --other-hub http://127.0.0.1:18092 --events 5000 --rate 1000 --batch 10
#   bench/pg.sh publish --via insert --database-url postgres://postgres@127.0.0.1:5432/hub_perf
exec env BACKEND=postgres "$(dirname "$0")/cluster.sh" "$@"
