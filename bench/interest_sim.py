#!/usr/bin/env python3
"""What hubs reading only the topics their clients want would save (docs/SCALING.md): a simulation.

The workload is the dashboard's: a share of the events goes to a few streams nearly every client watches (run and
deploy status, system errors, audit), the rest to the live logs of many runs, each watched by a few clients at
most. Clients land on hubs at random (a load balancer), or by the run they watch (hash routing). For each hub
count, it prints the share of the log's events the average hub must read, and the reads the backend serves
(hubs × that share), against every hub reading everything (today).

    python3 bench/interest_sim.py                # the table in docs/SCALING.md
    python3 bench/interest_sim.py --clients 20000 --log-share 0.9
"""
import argparse
import json
import random


def simulate(hubs, clients, runs, log_share, watch_log, routing, seed):
    rng = random.Random(seed)
    # Run i's share of the log events: a few busy runs, a long tail (Zipf, exponent 1).
    weights = [1.0 / (i + 1) for i in range(runs)]
    total = sum(weights)
    run_share = [log_share * w / total for w in weights]
    wanted_runs = [set() for _ in range(hubs)]
    watches_status = [False] * hubs
    for _ in range(clients):
        run = rng.randrange(runs) if rng.random() < watch_log else None
        if routing == "hash" and run is not None:
            hub = hash((run, seed)) % hubs
        else:
            hub = rng.randrange(hubs)
        watches_status[hub] = True
        if run is not None:
            wanted_runs[hub].add(run)
    shares = []
    for hub in range(hubs):
        share = (1 - log_share) if watches_status[hub] else 0.0
        share += sum(run_share[r] for r in wanted_runs[hub])
        shares.append(share)
    mean = sum(shares) / hubs
    return {"hubs": hubs, "clients": clients, "runs": runs, "routing": routing,
            "mean_share_read": round(mean, 4), "max_share_read": round(max(shares), 4),
            "backend_reads_vs_today": round(mean, 4)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--hubs", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--runs", type=int, default=5_000, help="runs whose logs are live at once")
    parser.add_argument("--log-share", type=float, default=0.8, help="share of the events that are run logs")
    parser.add_argument("--watch-log", type=float, default=0.2, help="share of clients watching one run's log")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    for clients in args.clients:
        for hubs in args.hubs:
            for routing in ("random", "hash"):
                print(json.dumps(simulate(hubs, clients, args.runs, args.log_share, args.watch_log, routing,
                                          args.seed)))


if __name__ == "__main__":
    main()
