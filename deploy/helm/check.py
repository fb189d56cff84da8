"""Lints the chart, renders every variant, validates the manifests against the Kubernetes schemas (no cluster, no
helm binary) and asserts the safety properties on what is rendered; checks the README's values table.

    pip install helm-python-sdk kubernetes-validate pyyaml && python3 deploy/helm/check.py
"""
import pathlib
import subprocess
import sys

import helm_python as helm
import kubernetes_validate
import yaml

CHART = pathlib.Path(__file__).parent / "realtime-hub"
KUBE_VERSION = "1.30"
# Custom resources of the Prometheus Operator: not in the Kubernetes schemas, checked by shape below.
CRDS = {"ServiceMonitor", "PrometheusRule"}
CASES = {
    "defaults (postgres, 2 replicas)": {},
    "memory backend, 1 replica": {"backend": "memory", "replicaCount": 1},
    "redis backend, 3 replicas, one existingSecret": {"backend": "redis", "replicaCount": 3, "existingSecret": "hub-env",
                                                      "auth": {"existingSecret": ""}, "redis": {"prefix": "prod"}},
    "postgres, everything on": {
        "ingress": {"enabled": True, "host": "rt.example.com", "tlsSecret": "rt-tls"},
        "autoscaling": {"enabled": True, "targetConnectionsPerPod": 5000},
        "networkPolicy": {"enabled": True, "from": [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}]},
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "smoke": {"tokenSecret": "hub-smoke"},
        "sources": "[[source]]\nname = \"flags\"\n",
        "topicPolicies": "[[policy]]\ntopics = [\"run.logs\"]\nretention = \"1h\"\n",
    },
    "sources from values text": {"sources": {"toml": "[[source]]\nname = \"flags\"\n"}},
    "sources from a Secret, JWKS with a private CA": {
        "sources": {"existingSecret": "hub-sources", "secretKey": "flags.toml"},
        "auth": {"existingSecret": "", "jwksUrl": "https://id.internal/jwks.json",
                 "jwksCa": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----"},
    },
    "nats backend, 3 stream replicas, creds from the Secret": {"backend": "nats", "replicaCount": 3,
                                                               "nats": {"credsKey": "hub.creds"}},
    "nats backend, one existingSecret": {"backend": "nats", "existingSecret": "hub-env", "auth": {"existingSecret": ""},
                                         "nats": {"replicas": 5, "stream": "realtime_prod"}},
    "JWKS with audience and issuer": {"auth": {"existingSecret": "", "jwksUrl": "https://id.example/jwks.json",
                                               "audience": "realtime-hub", "issuer": "https://id.example"}},
    "public key, settings": {"auth": {"existingSecret": "", "publicKey": "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----"},
                             "settings": {"HUB_MAX_CONNECTIONS": 50000, "HUB_CORS_ORIGINS": "https://staff.example"}},
}
MUST_FAIL = {
    "memory backend with 2 replicas": {"backend": "memory", "replicaCount": 2},
    "memory backend with autoscaling": {"backend": "memory", "replicaCount": 1, "autoscaling": {"enabled": True}},
    "no token key and not insecure": {"auth": {"existingSecret": ""}},
    "image tag latest": {"image": {"tag": "latest"}},
    "sources as text and as a Secret at once": {"sources": {"toml": "[[source]]", "existingSecret": "hub-sources"}},
    "grace shorter than the drain": {"terminationGracePeriodSeconds": 10},
}


def documents(rendered):
    return [d for path, text in rendered.items() if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]


def check_safety(name, values, docs):
    """The properties every rendering must have; returns the problems found."""
    problems = []
    kinds = {d["kind"] for d in docs}
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    backend = values.get("backend", "postgres")
    for d in docs:
        spec = d["spec"]["template"]["spec"] if d["kind"] in ("Deployment", "Job") else d["spec"] if d["kind"] == "Pod" else None
        for c in (spec or {}).get("containers", []):
            sc = c.get("securityContext", {})
            if not (sc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False):
                problems.append(f"{d['kind']} {c['name']}: must run as non-root, read-only root, no privilege escalation")
            if c["image"].endswith(":latest") or ":" not in c["image"]:
                problems.append(f"{d['kind']} {c['name']}: image {c['image']} is not pinned")
    hub = pod["containers"][0]
    if not (hub.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz"
            and hub.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz"):
        problems.append("the hub needs /readyz readiness and /healthz liveness probes")
    if "preStop" not in hub.get("lifecycle", {}):
        problems.append("the hub needs a preStop so endpoints drop it before it drains")
    replicas = deployment["spec"].get("replicas", 2)
    if replicas > 1 and "PodDisruptionBudget" not in kinds:
        problems.append("several replicas need a PodDisruptionBudget")
    if backend == "postgres":
        jobs = [d for d in docs if d["kind"] == "Job"]
        if not jobs or "pre-upgrade" not in jobs[0]["metadata"].get("annotations", {}).get("helm.sh/hook", ""):
            problems.append("the postgres backend needs the migration Job as a pre-install/pre-upgrade hook")
    service = next(d for d in docs if d["kind"] == "Service")
    if service["spec"]["selector"].get("app.kubernetes.io/component") != "hub":
        problems.append("the Service must select the hub pods only (not the migration Job or the test Pod)")
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    if config.get("HUB_BACKEND") != backend:
        problems.append(f"the ConfigMap does not run the {backend} backend")
    env = {e["name"]: e for e in hub.get("env", [])}
    url = {"postgres": "DATABASE_URL", "redis": "REDIS_URL", "nats": "NATS_URL"}.get(backend)
    from_secret = values.get("existingSecret") or (url and "secretKeyRef" in env.get(url, {}).get("valueFrom", {}))
    if url and not from_secret:
        problems.append(f"{url} must come from a Secret")
    if values.get("topicPolicies") and config.get("HUB_TOPIC_POLICIES") != values["topicPolicies"]:
        problems.append("topicPolicies must be passed as HUB_TOPIC_POLICIES")
    sources = values.get("sources")
    sources = {"toml": sources} if isinstance(sources, str) else (sources or {})
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounted = {m["name"]: m for m in hub.get("volumeMounts", [])}
    if sources.get("existingSecret"):
        secret = volumes.get("sources", {}).get("secret", {})
        if secret.get("secretName") != sources["existingSecret"] or "sources.toml" in config:
            problems.append("sources.existingSecret: the file must come from that Secret only, not the ConfigMap")
        if secret.get("items") != [{"key": sources.get("secretKey", "sources.toml"), "path": "sources.toml"}]:
            problems.append("sources.secretKey must be mounted as sources.toml")
    elif sources.get("toml") and config.get("sources.toml") != sources["toml"]:
        problems.append("sources text must be in the ConfigMap")
    if sources.get("existingSecret") or sources.get("toml"):
        if config.get("HUB_SOURCES") != "/etc/realtime-hub/sources.toml" or "sources" not in mounted:
            problems.append("the sources file must be mounted at /etc/realtime-hub and named by HUB_SOURCES")
    elif "HUB_SOURCES" in config or "sources" in volumes:
        problems.append("no sources given, yet the sources file is configured")
    if backend == "nats":
        nats = {"stream": "realtime", "replicas": 3, **values.get("nats", {})}
        if config.get("HUB_NATS_STREAM") != nats["stream"] or config.get("HUB_NATS_REPLICAS") != str(nats["replicas"]):
            problems.append("the nats backend must name its stream and replicas in the ConfigMap")
        if nats.get("credsKey"):
            secret = volumes.get("nats-creds", {}).get("secret", {})
            if config.get("NATS_CREDS") != "/etc/nats/hub.creds" or "nats-creds" not in mounted \
                    or secret.get("items") != [{"key": nats["credsKey"], "path": "hub.creds"}]:
                problems.append("nats.credsKey must be mounted from the Secret and named by NATS_CREDS")
    ca = values.get("auth", {}).get("jwksCa")
    if ca and config.get("HUB_JWT_JWKS_CA") != ca:
        problems.append("auth.jwksCa must reach the hub as HUB_JWT_JWKS_CA")
    if not any(d["kind"] == "Pod" and d["metadata"]["annotations"].get("helm.sh/hook") == "test" for d in docs):
        problems.append("the chart needs its helm test Pod (hub smoke)")
    for d in docs:
        if d["kind"] == "Ingress":
            a = d["metadata"]["annotations"]
            if a.get("nginx.ingress.kubernetes.io/proxy-buffering") != "off" or int(a["nginx.ingress.kubernetes.io/proxy-read-timeout"]) < 300:
                problems.append("the Ingress must not buffer and must keep streams open")
        if d["kind"] in CRDS and not d.get("spec"):
            problems.append(f"{d['kind']} has no spec")
    return problems


def main() -> int:
    report = helm.lint(CHART, strict=True)
    # Severities: 1 info, 2 warning, 3 error.
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    if problems:
        print("helm lint:", problems)
        return 1
    chart = helm.Chart.load(CHART)
    for name, values in CASES.items():
        docs = documents(chart.render(values, name="hub", namespace="realtime", is_install=True))
        for document in docs:
            if document["kind"] not in CRDS:
                kubernetes_validate.validate(document, KUBE_VERSION, strict=True)
        problems = check_safety(name, values, docs)
        if problems:
            print(f"{name}:", *problems, sep="\n  ")
            return 1
        print(f"ok: {name}: {len(docs)} manifests ({', '.join(sorted({d['kind'] for d in docs}))}) valid for Kubernetes {KUBE_VERSION}")
    for name, values in MUST_FAIL.items():
        try:
            chart.render(values, name="hub", namespace="realtime", is_install=True)
        except helm.HelmError as error:
            print(f"ok: {name} refused: {str(error).splitlines()[0][:140]}")
        else:
            print(f"{name} rendered but must be refused")
            return 1
    return subprocess.run([sys.executable, str(pathlib.Path(__file__).parent / "readme.py"), "--check"]).returncode


if __name__ == "__main__":
    sys.exit(main())
