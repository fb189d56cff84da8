"""Lints the chart and validates what it renders against the Kubernetes schemas (no cluster, no helm binary).

    pip install helm-python-sdk kubernetes-validate && python3 deploy/helm/check.py
"""
import pathlib
import sys

import helm_python as helm
import kubernetes_validate
import yaml

CHART = pathlib.Path(__file__).parent / "realtime-hub"
KUBE_VERSION = "1.30"
CASES = {
    "defaults (postgres, 2 replicas)": {},
    "memory backend, 1 replica, HS256": {"backend": "memory", "replicaCount": 1, "auth": {"existingSecret": "jwt"}},
    "redis backend, 3 replicas": {"backend": "redis", "replicaCount": 3, "redis": {"prefix": "prod"}},
    "JWKS with audience and issuer": {"auth": {"existingSecret": "", "jwksUrl": "https://id.example/jwks.json",
                                               "audience": "realtime-hub", "issuer": "https://id.example"}},
    "public key, settings": {"auth": {"existingSecret": "", "publicKey": "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----"},
                             "settings": {"HUB_MAX_CONNECTIONS": 50000, "HUB_CORS_ORIGINS": "https://staff.example"}},
}
MUST_FAIL = {
    "memory backend with 2 replicas": {"backend": "memory", "replicaCount": 2},
    "no token key and not insecure": {"auth": {"existingSecret": ""}},
}


def documents(rendered):
    return [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]


def main() -> int:
    report = helm.lint(CHART, strict=True)
    # Severities: 1 info, 2 warning, 3 error.
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    if problems:
        print("helm lint:", problems)
        return 1
    chart = helm.Chart.load(CHART)
    for name, values in CASES.items():
        rendered = chart.render(values, name="hub", namespace="realtime", is_install=True)
        count = 0
        for path, text in rendered.items():
            for document in yaml.safe_load_all(text):
                if document:
                    kubernetes_validate.validate(document, KUBE_VERSION, strict=True)
                    count += 1
        backend = values.get("backend", "postgres")
        env = {e["name"]: e for d in documents(rendered) if d["kind"] == "Deployment"
               for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        url = {"postgres": "DATABASE_URL", "redis": "REDIS_URL"}.get(backend)
        if env["HUB_BACKEND"]["value"] != backend or (url and "secretKeyRef" not in env[url].get("valueFrom", {})):
            print(f"{name}: the Deployment does not run the {backend} backend with its URL from a Secret")
            return 1
        print(f"ok: {name}: {count} manifests valid for Kubernetes {KUBE_VERSION}")
    for name, values in MUST_FAIL.items():
        try:
            chart.render(values, name="hub", namespace="realtime", is_install=True)
        except helm.HelmError as error:
            print(f"ok: {name} refused: {str(error).splitlines()[0][:120]}")
        else:
            print(f"{name} rendered but must be refused")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
