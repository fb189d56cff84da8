#!/usr/bin/env bash
# Publishing on PostgreSQL beside plain INSERTs of the same rows, in one session (docs/PERFORMANCE.md):
# 16 publishers, single events then batches of 100, each configuration RUNS times, alternating.
#   psql -h 127.0.0.1 -U postgres -c 'create database hub_perf'
#   bench/pg-publish.sh            # RUNS=3 DURATION=8
# insert: a table of the inbox's shape (primary key only); insert-log: a table of the log's shape (its generated
# columns and indexes); crate: the publisher crate's PostgreSQL sink; http@sequencer / http@other: POST /api/publish
# on the hub that is the cluster's sequencer / on the other one; insert-tx / crate-tx: each publish in a transaction
# of its own (BEGIN, the insert, COMMIT: the crate's publish_in). Two hubs follow the log in every run.
set -u
cd "$(dirname "$0")/.."
DB=${DB:-postgres://postgres@127.0.0.1:5432/hub_perf}
RUNS=${RUNS:-3}
DURATION=${DURATION:-8}
for batch in 1 100; do
  for run in $(seq 1 "$RUNS"); do
    for config in insert insert-log crate insert-tx crate-tx http@sequencer http@other; do
      via=${config%@*}
      via=${via%-tx}
      sequencer=first
      [ "$config" = http@other ] && sequencer=second
      tx=()
      [ "${config%-tx}" != "$config" ] && tx=(--in-transaction)
      [ "$batch" = 100 ] && { [ "$via" = crate ] || [ ${#tx[@]} = 1 ]; } && continue
      rate=$(SEQUENCER=$sequencer bench/pg.sh publish --via "$via" --batch "$batch" --database-url "$DB" \
               --duration-s "$DURATION" "${tx[@]}" | grep -o '"events_per_s":[0-9.]*' | cut -d: -f2)
      printf 'batch %-3s run %s %-15s %8.0f events/s\n' "$batch" "$run" "$config" "${rate:-0}"
    done
  done
done
