"""Checks the Grafana dashboard and the Prometheus alerting rules against a live hub: every metric they use must be
in the hub's /metrics output (names of histograms count with their _bucket/_sum/_count series).

    python3 deploy/check_observability.py target/debug/hub
"""
import json
import pathlib
import re
import socket
import subprocess
import sys
import time
import urllib.request

import yaml

ROOT = pathlib.Path(__file__).parent
METRIC = re.compile(r"\b((?:hub|pubsub)_[a-z_]+)")


def exprs():
    dashboard = json.loads((ROOT / "grafana/realtime-hub.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield f"dashboard panel {panel['title']!r}", target["expr"]
    for group in yaml.safe_load((ROOT / "helm/realtime-hub/files/alerts.yaml").read_text())["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule['alert']}", rule["expr"]


def scrape(binary):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sources = ROOT.parent / "target/check-observability-sources.toml"
    sources.parent.mkdir(exist_ok=True)
    # A source (never polled successfully: no database) so the per-source series exist too.
    sources.write_text('[[source]]\nname = "check"\ndatabase_url_env = "CHECK_SOURCE_URL"\nquery = "SELECT 1"\n'
                       'topic = "t"\npayload = { a = "{a}" }\n')
    env = {"HUB_BIND": f"127.0.0.1:{port}", "HUB_SOURCES": str(sources), "RUST_LOG": "error",
           "CHECK_SOURCE_URL": "postgres://nobody@127.0.0.1:1/none", "PATH": "/usr/bin:/bin"}
    hub = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            except OSError:
                time.sleep(0.1)
        raise SystemExit("the hub did not answer /metrics")
    finally:
        hub.terminate()
        hub.wait()


def main():
    exported = {line.split("{")[0].split(" ")[0] for line in scrape(sys.argv[1]).splitlines() if line and not line.startswith("#")}
    missing = []
    count = 0
    for where, expr in exprs():
        for name in METRIC.findall(expr):
            count += 1
            if name not in exported:
                missing.append(f"{where}: {name}")
    if missing:
        print("metrics used by the dashboard or the rules but not exported by the hub:", *missing, sep="\n  ")
        return 1
    print(f"ok: {count} metric uses in the dashboard and rules, all exported by a live hub ({len(exported)} series names)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
