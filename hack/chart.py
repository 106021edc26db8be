#!/usr/bin/env python3
"""The Helm chart through a real Helm engine (Helm v4's Go SDK, from PyPI's
helm-python-sdk): lint it, render it, and keep deploy/ rendered from it.

  chart.py lint                       lint (strict), fail on any error or warning
  chart.py render NAME NS [VALUES]    print the manifests (VALUES: a JSON/YAML file)
  chart.py deploy [--check]           (re)write deploy/base/slurmlab.yaml, or check it is current
  chart.py install NAME NS KUBECONFIG [VALUES] [--wait]  helm install (creating NS) as the
                                      kubeconfig's user; --wait: until every object is ready
  chart.py upgrade NAME NS KUBECONFIG VALUES [--wait]    helm upgrade
  chart.py uninstall NAME NS KUBECONFIG                  helm uninstall --wait (hooks included)
"""
import json
import os
import sys

import helm_python as helm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "charts", "slurmlab")
DEPLOY = os.path.join(ROOT, "deploy", "base", "slurmlab.yaml")
HEADER = (
    "# Rendered from charts/slurmlab with its default values (release `slurmlab` in\n"
    "# namespace `slurmlab-system`) by `make deploy`; tests fail when it is stale.\n"
)


def render(name, namespace, values=None, hooks=True):
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values or {})
        manifests = chart.render(values or {}, name=name, namespace=namespace, is_install=True)
    docs = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        for doc in manifests[path].split("\n---"):
            body = "\n".join(l for l in doc.splitlines() if l.strip() != "---").strip()
            # Plain manifests have no hooks: `kubectl apply` would run an uninstall Job at once.
            if not hooks and "helm.sh/hook:" in body:
                continue
            if body and any(not l.lstrip().startswith("#") for l in body.splitlines()):
                docs.append(f"# Source: {os.path.relpath(path, 'slurmlab')}\n{body}\n")
    return "---\n".join(docs)


def load_values(path):
    if path is None:
        return None
    return helm.values_from_yaml(open(path).read())


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[0]
    if cmd == "lint":
        report = helm.lint(CHART, strict=True, kube_version="v1.33.0")
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        for m in report.get("messages", []):
            print(f"lint: {m.get('path')}: {m.get('error')}")
        for e in report.get("errors", []):
            print(f"lint error: {e}")
        if problems or report.get("errors"):
            return 1
        # Every optional part renders and yields the objects it promises.
        everything = {
            "controller": {"replicas": 2},
            "slurmCluster": {"create": True, "name": "hpc", "spec": {"restApi": {"url": "http://slurmrestd:6820"}}},
            "networkPolicy": {"enabled": True, "apiServerCIDRs": ["10.0.0.1/32"],
                              "slurmrestdCIDRs": ["10.0.1.5/32"], "computeCIDRs": ["10.1.0.0/16"]},
            "serviceMonitor": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
            "gateway": {"profiles": {"gpu": {"partition": "gpu", "gpus": 1}}},
        }
        text = render("all", "slurmlab-system", everything)
        kinds = [l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("kind:")]
        for kind, count in [("PodDisruptionBudget", 1), ("NetworkPolicy", 2), ("ServiceMonitor", 1),
                            ("SlurmCluster", 1), ("Deployment", 2), ("ConfigMap", 2), ("Job", 1)]:
            if kinds.count(kind) != count:
                print(f"lint: with every option on, expected {count} {kind}, rendered {kinds.count(kind)}")
                return 1
        # Values given as JSON (helm --set-json, the Python SDK) arrive as floats: numbers
        # must still render as integers, never 1.048576e+07.
        big = render("num", "slurmlab-system", {"gateway": {"uploadLimitBytes": 10485760}})
        if "--upload-limit-bytes=10485760" not in big or "e+0" in big:
            print("lint: a large number renders in float notation; use `int` in the template")
            return 1
        if '"uid": "slurmlab"' not in text:
            print("lint: the Grafana dashboard is missing from its ConfigMap")
            return 1
        return 0
    if cmd == "render":
        name, namespace = argv[1], argv[2]
        values = load_values(argv[3] if len(argv) > 3 else None)
        sys.stdout.write(render(name, namespace, values))
        return 0
    if cmd == "deploy":
        text = HEADER + render("slurmlab", "slurmlab-system", hooks=False)
        if "--check" in argv:
            current = open(DEPLOY).read() if os.path.exists(DEPLOY) else ""
            if current != text:
                print(f"{os.path.relpath(DEPLOY, ROOT)} is stale: run `make deploy`", file=sys.stderr)
                return 1
            return 0
        open(DEPLOY, "w").write(text)
        return 0
    if cmd in ("install", "upgrade", "uninstall"):
        name, namespace, kubeconfig = argv[1], argv[2], argv[3]
        wait = "watcher" if "--wait" in argv else None
        rest = [a for a in argv[4:] if a != "--wait"]
        values = load_values(rest[0] if rest else None)
        with helm.Config(namespace=namespace, kubeconfig_path=kubeconfig) as cfg:
            if cmd == "install":
                release = cfg.install(CHART, name, values or {}, create_namespace=True,
                                      timeout=300, wait=wait)
            elif cmd == "upgrade":
                release = cfg.upgrade(CHART, name, values or {}, timeout=300, wait=wait)
            else:
                cfg.uninstall(name, timeout=300, wait="watcher")
                print(f"release {name}: uninstalled")
                return 0
            print(f"release {name}: {release.get('status')}, revision {release.get('revision')}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
