#!/usr/bin/env python3
"""Renders every kustomization under deploy/kubernetes and checks the output.

Run by scripts/validate-manifests (which provides kubectl, the project
virtualenv with kubernetes-validate, and Envoy). Three layers of checks:

1. Schema. Core kinds: kubernetes-validate's bundled OpenAPI schemas, strict
   (unknown fields rejected), for every pinned Kubernetes version. Custom
   resources: the project's structural schemas in crd-schemas.yaml. A kind
   with neither is an error, never a warning.
2. Envoy. The ext_proc filter in the Istio EnvoyFilter is loaded by a real
   Envoy (`envoy --mode validate`) inside a minimal listener.
3. Meaning. Per rendering: the objects that must be there, the flags, ports,
   probes, security settings and mounts that must agree with each other, and
   for the reference scenario the pools, LoRAs, adapter maps and routes.

`--self-test` breaks good renderings in known ways and fails unless every
break is caught, so none of the checks above can silently pass everything.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
KUBE = HERE.parent  # deploy/kubernetes

# Kubernetes versions the core objects must be valid for: the oldest one we
# support (native gRPC probes are GA since 1.27) and the newest schema bundled.
DEFAULT_K8S_VERSIONS = ["1.30.0", "1.37.0"]

# The reference scenario (design.md): pool -> (base model, LoRAs, replicas).
SCENARIO = {
    "vllm-llama3-8b-instruct": ("meta-llama/Llama-3.1-8B-Instruct", ["food-review-1"], 3),
    "vllm-deepseek-r1": ("deepseek/vllm-deepseek-r1", ["ski-resorts", "movie-critique"], 1),
}
SIM_IMAGE = "ghcr.io/llm-d/llm-d-inference-sim:"
MODEL_HEADER = "X-Gateway-Model-Name"
BASE_HEADER = "X-Gateway-Base-Model-Name"
BBR = "bbr-extproc"
RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}

Docs = list[dict[str, Any]]


class Failures:
    """Collects every problem of one rendering instead of stopping at the first."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.items: list[str] = []

    def check(self, ok: Any, message: str) -> bool:
        if not ok:
            self.items.append(message)
        return bool(ok)


# ---------------------------------------------------------------- rendering


def render(kubectl: str, directory: Path) -> Docs:
    proc = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def compose(tmp: Path, name: str, resources: list[Path], components: list[Path]) -> Path:
    """A throw-away kustomization combining existing ones (kustomize accepts
    only relative paths)."""
    d = tmp / name
    d.mkdir(parents=True)
    k = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(r, d) for r in resources],
        "components": [os.path.relpath(c, d) for c in components],
    }
    (d / "kustomization.yaml").write_text(yaml.safe_dump(k))
    return d


def overlay_in_namespace(tmp: Path, overlay: str, namespace: str) -> Path:
    """A copy of an overlay with another `namespace:`, to prove that the
    replacements keep derived names (cluster name, host, SNI) in step."""
    src = KUBE / "overlays" / overlay
    d = tmp / f"{overlay}-in-{namespace}"
    shutil.copytree(src, d)
    k = yaml.safe_load((d / "kustomization.yaml").read_text())
    k["namespace"] = namespace
    k["resources"] = [
        os.path.relpath(src / r, d) if r.startswith("..") else r for r in k["resources"]
    ]
    (d / "kustomization.yaml").write_text(yaml.safe_dump(k))
    return d


# ------------------------------------------------------------------ schemas


def load_crd_schemas() -> dict[str, Any]:
    raw = yaml.safe_load((HERE / "crd-schemas.yaml").read_text())
    defs = raw["$defs"]
    out = {}
    for kind, entry in raw["kinds"].items():
        schema = {
            "$defs": defs,
            "type": "object",
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "additionalProperties": False,
            "properties": {
                "apiVersion": {"enum": entry["apiVersions"]},
                "kind": {"const": kind},
                "metadata": {"$ref": "#/$defs/metadata"},
                "spec": entry["spec"],
            },
        }
        jsonschema.Draft202012Validator.check_schema(schema)
        out[kind] = jsonschema.Draft202012Validator(schema)
    return out


def check_schemas(docs: Docs, f: Failures, crd: dict[str, Any], versions: list[str]) -> None:
    for doc in docs:
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        where = f"{kind}/{name}"
        if kind in crd:
            errors = sorted(crd[kind].iter_errors(doc), key=lambda e: list(e.path))
            for e in errors:
                path = ".".join(str(p) for p in e.path)
                f.check(False, f"{where}: {path}: {e.message} (project CRD schema)")
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.utils.SchemaNotFoundError:
                f.check(False, f"{where}: no schema for {doc.get('apiVersion')} {kind} "
                               "(neither a Kubernetes kind nor one of crd-schemas.yaml)")
                break
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                f.check(False, f"{where}: {path}: {e.message} (Kubernetes {version}, strict)")


# ------------------------------------------------------------------ helpers


def objects(docs: Docs, kind: str) -> Docs:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: Docs, kind: str, name: str, f: Failures) -> dict[str, Any] | None:
    found = [d for d in objects(docs, kind) if d["metadata"]["name"] == name]
    f.check(len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}")
    return found[0] if len(found) == 1 else None


def flags(args: list[str]) -> dict[str, str]:
    """`--name=value` flags of bbr-extproc (the manifests always use `=`)."""
    out = {}
    for a in args:
        if a.startswith("-") and "=" in a:
            k, v = a.split("=", 1)
            out[k] = v
        else:
            out[a] = ""
    return out


def argv_values(args: list[str], flag: str) -> list[str]:
    """Values after a flag that takes several argv words (the simulator's
    --lora-modules), up to the next `--` flag."""
    if flag not in args:
        return []
    out = []
    for a in args[args.index(flag) + 1:]:
        if a.startswith("--"):
            break
        out.append(a)
    return out


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_port(container: dict[str, Any], ref: Any) -> int | None:
    for p in container.get("ports", []):
        if ref in (p.get("name"), p.get("containerPort")):
            return p["containerPort"]
    return None


def svc_dns(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local"


# ------------------------------------------------------- bbr-extproc checks


def check_bbr_common(docs: Docs, f: Failures) -> dict[str, Any]:
    """The base objects; returns facts the provider checks build on."""
    facts: dict[str, Any] = {}
    for kind in RBAC_KINDS | {"Secret"}:
        f.check(not objects(docs, kind), f"no {kind} expected (no API access, no shipped keys)")
    sa = one(docs, "ServiceAccount", BBR, f)
    dep = one(docs, "Deployment", BBR, f)
    svc = one(docs, "Service", BBR, f)
    if not (sa and dep and svc):
        return facts
    ns = dep["metadata"].get("namespace")
    f.check(ns, "bbr-extproc must have an explicit namespace (the Gateway's)")
    facts["namespace"] = ns
    f.check(sa.get("automountServiceAccountToken") is False, "ServiceAccount must not mount a token")
    pod = dep["spec"]["template"]["spec"]
    f.check(pod.get("serviceAccountName") == BBR, "Deployment must use ServiceAccount bbr-extproc")
    f.check(pod.get("automountServiceAccountToken") is False, "pod must not mount an API token")
    containers = [c for c in pod["containers"] if c["name"] == BBR]
    if not f.check(len(containers) == 1, "one container named bbr-extproc"):
        return facts
    c = containers[0]
    facts["pod"], facts["container"] = pod, c
    fl = flags(c.get("args", []))
    facts["flags"] = fl
    want = {"--grpc-port": "9004", "--grpc-health-port": "9005", "--metrics-port": "9090"}
    for k, v in want.items():
        f.check(fl.get(k) == v, f"flag {k}={v} expected, got {fl.get(k)!r}")
    grpc, health, metrics = (int(fl.get(k, "0") or 0) for k in want)
    facts["grpc_port"], facts["health_port"] = grpc, health
    f.check(len({grpc, health, metrics}) == 3, "the three ports must differ")
    for p in (grpc, health, metrics):
        f.check(container_port(c, p), f"containerPort {p} must be declared")
    f.check(fl.get("--secure-serving") in ("true", None), "--secure-serving must stay on")
    facts["secure"] = fl.get("--secure-serving", "true") == "true"
    # Probes: Kubernetes' own gRPC probe on the health port.
    for probe in ("readinessProbe", "livenessProbe"):
        pr = c.get(probe) or {}
        f.check(pr.get("grpc", {}).get("port") == health,
                f"{probe} must be a native grpc probe on port {health}")
    # Security.
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    f.check(psc.get("runAsNonRoot") or csc.get("runAsNonRoot"), "runAsNonRoot must be true")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    f.check(uid not in (None, 0), "runAsUser must be a non-zero uid")
    f.check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
    f.check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    f.check("ALL" in csc.get("capabilities", {}).get("drop", []), "capabilities must drop ALL")
    res = c.get("resources", {})
    f.check(res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory"),
            "cpu and memory requests must be set")
    f.check(res.get("limits", {}).get("memory"), "a memory limit must be set")
    # Volumes and mounts agree; adapters and certificates are mounted where
    # the flags point.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = c.get("volumeMounts", [])
    mounted = {m["name"] for m in mounts}
    for m in mounts:
        f.check(m["name"] in volumes, f"volumeMount {m['name']} has no volume")
        f.check(m.get("readOnly") is True, f"volumeMount {m['mountPath']} must be readOnly")
    for v in volumes:
        f.check(v in mounted, f"volume {v} is never mounted")
    adapters = fl.get("--adapters")
    facts["adapter_configmaps"] = set()
    if f.check(adapters, "--adapters must point at the mounted adapter ConfigMaps"):
        for m in mounts:
            v = volumes.get(m["name"], {})
            if m["mountPath"].startswith(adapters.rstrip("/") + "/") and "configMap" in v:
                facts["adapter_configmaps"].add(v["configMap"]["name"])
        f.check("bbr-adapters" in facts["adapter_configmaps"],
                f"the default adapter ConfigMap bbr-adapters must be mounted under {adapters}")
    for key in ("--cert-path", "--key-path"):
        path = fl.get(key)
        if path is None:
            continue
        ok = any(path.startswith(m["mountPath"].rstrip("/") + "/")
                 and "secret" in volumes.get(m["name"], {}) for m in mounts)
        f.check(ok, f"{key}={path} must lie in a mounted Secret")
    f.check(("--cert-path" in fl) == ("--key-path" in fl), "--cert-path and --key-path go together")
    facts["real_certs"] = "--cert-path" in fl
    # Service: selects the pods, exposes ext_proc with HTTP/2 and the metrics.
    labels = dep["spec"]["template"]["metadata"].get("labels", {})
    f.check(selects(svc["spec"].get("selector", {}), labels), "Service must select the pods")
    f.check(selects(dep["spec"]["selector"].get("matchLabels", {}), labels),
            "Deployment selector must match its pod labels")
    ports = {p["port"]: p for p in svc["spec"]["ports"]}
    gp = ports.get(grpc)
    if f.check(gp, f"Service must expose the ext_proc port {grpc}"):
        f.check(container_port(c, gp.get("targetPort", grpc)) == grpc,
                "Service ext_proc port must target the container's ext_proc port")
        want_proto = "HTTP2" if facts["secure"] else "kubernetes.io/h2c"
        f.check(gp.get("appProtocol") == want_proto,
                f"ext_proc appProtocol must be {want_proto} (TLS on: {facts['secure']})")
    mp = ports.get(metrics)
    if f.check(mp, f"Service must expose the metrics port {metrics}"):
        f.check(container_port(c, mp.get("targetPort", metrics)) == metrics,
                "Service metrics port must target the container's metrics port")
    facts["service"] = svc
    return facts


def check_none(docs: Docs, f: Failures, facts: dict[str, Any]) -> None:
    kinds = {d["kind"] for d in docs}
    f.check(kinds == {"ServiceAccount", "Deployment", "Service"},
            f"overlay none holds only the common objects, got {sorted(kinds)}")


def check_gke(docs: Docs, f: Failures, facts: dict[str, Any]) -> None:
    ext = one(docs, "GCPRoutingExtension", BBR, f)
    hcp = one(docs, "HealthCheckPolicy", BBR, f)
    ns = facts.get("namespace")
    if ext:
        f.check(any(t["kind"] == "Gateway" for t in ext["spec"]["targetRefs"]),
                "GCPRoutingExtension must target a Gateway")
        exts = [e for ch in ext["spec"]["extensionChains"] for e in ch["extensions"]]
        for e in exts:
            f.check(e.get("requestBodySendMode") == "FullDuplexStreamed",
                    "requestBodySendMode must be FullDuplexStreamed")
            ev = e.get("supportedEvents", [])
            for need in ("RequestHeaders", "RequestBody", "RequestTrailers"):
                f.check(need in ev, f"supportedEvents must include {need}")
            f.check(not [x for x in ev if x.startswith("Response")],
                    "no response events: SSE streams must not pass through the extension")
            f.check(e.get("failOpen") is False, "failOpen must be false (never route unrouted)")
            t = e.get("timeout", "")
            secs = float(t[:-2]) / 1000 if t.endswith("ms") else float(t.rstrip("s") or 0)
            f.check(secs >= 5, f"timeout {t!r} too short for large bodies (>= 5s)")
            b = e["backendRef"]
            f.check(b.get("kind") == "Service" and b["name"] == BBR
                    and b.get("port") == facts.get("grpc_port"),
                    "backendRef must be Service bbr-extproc on the ext_proc port")
            f.check(e.get("authority") == svc_dns(BBR, ns),
                    f"authority must be {svc_dns(BBR, ns)}, got {e.get('authority')!r}")
    if hcp:
        cfg = hcp["spec"]["default"]["config"]
        f.check(cfg.get("type") == "GRPC", "HealthCheckPolicy must use a GRPC check")
        g = cfg.get("grpcHealthCheck", {})
        f.check(g.get("portSpecification") == "USE_FIXED_PORT"
                and g.get("port") == facts.get("health_port"),
                "HealthCheckPolicy must check the fixed gRPC health port")
        t = hcp["spec"]["targetRef"]
        f.check(t.get("kind") == "Service" and t["name"] == BBR,
                "HealthCheckPolicy must target Service bbr-extproc")


def envoy_validate(envoy: str, filter_value: dict[str, Any], cluster: str, f: Failures) -> None:
    """Loads the EnvoyFilter's HTTP filter into a real Envoy listener."""
    bootstrap = {
        "static_resources": {
            "listeners": [{
                "name": "gateway",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "gateway",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"},
                                        "direct_response": {"status": 404}}]}]},
                        "http_filters": [
                            filter_value,
                            {"name": "envoy.filters.http.router",
                             "typed_config": {"@type": "type.googleapis.com/envoy.extensions."
                                                       "filters.http.router.v3.Router"}},
                        ],
                    },
                }]}],
            }],
            "clusters": [{
                "name": cluster,
                "type": "STATIC",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                                 "HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}},
                    }
                },
                "load_assignment": {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": 9004}}}}]}]},
            }],
        }
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as tmp:
        json.dump(bootstrap, tmp)
    try:
        proc = subprocess.run(
            [envoy, "--mode", "validate", "-c", tmp.name, "-l", "error",
             "--base-id", str(os.getpid() % 60000 + 1000)],
            capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(tmp.name)
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).strip().splitlines() or ["(no output)"]
        # Drop Envoy's "[time][thread][level][logger] [file:line] " prefix.
        reason = re.sub(r"^(\[[^\]]*\]\s*)+", "", lines[-1])
        f.check(False, f"Envoy rejects the EnvoyFilter's ext_proc filter: {reason}")


def check_istio(docs: Docs, f: Failures, facts: dict[str, Any], envoy: str,
                self_signed: bool) -> None:
    ef = one(docs, "EnvoyFilter", BBR, f)
    dr = one(docs, "DestinationRule", BBR, f)
    ns = facts.get("namespace")
    pod_labels = (one(docs, "Deployment", BBR, Failures("-")) or {}).get(
        "spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    f.check(pod_labels.get("sidecar.istio.io/inject") == "false",
            "bbr-extproc pods must not get a sidecar (they terminate TLS themselves)")
    if ef:
        spec = ef["spec"]
        f.check("workloadSelector" not in spec, "scope by targetRefs, not workloadSelector")
        f.check([t for t in spec.get("targetRefs", []) if t.get("kind") == "Gateway"
                 and t.get("group") == "gateway.networking.k8s.io"],
                "EnvoyFilter must target the Gateway (targetRefs)")
        for cp in spec["configPatches"]:
            f.check(cp["applyTo"] == "HTTP_FILTER", "patch must add an HTTP filter")
            f.check(cp.get("match", {}).get("context") == "GATEWAY", "match context must be GATEWAY")
            value = cp["patch"]["value"]
            tc = value.get("typed_config", {})
            f.check(tc.get("@type", "").endswith("ext_proc.v3.ExternalProcessor"),
                    "the filter must be ext_proc")
            pm = tc.get("processing_mode", {})
            want = {"request_header_mode": "SEND", "request_body_mode": "FULL_DUPLEX_STREAMED",
                    "request_trailer_mode": "SEND", "response_header_mode": "SKIP",
                    "response_body_mode": "NONE", "response_trailer_mode": "SKIP"}
            for k, v in want.items():
                f.check(pm.get(k) == v, f"processing_mode.{k} must be {v}, got {pm.get(k)!r}")
            f.check(tc.get("failure_mode_allow") is False, "failure_mode_allow must be false")
            f.check(tc.get("allow_mode_override") is True, "allow_mode_override must be true")
            mt = tc.get("message_timeout", "0s")
            f.check(float(mt.rstrip("s")) >= 5, f"message_timeout {mt} too short (>= 5s)")
            cluster = tc.get("grpc_service", {}).get("envoy_grpc", {}).get("cluster_name")
            want_cluster = f"outbound|{facts.get('grpc_port')}||{svc_dns(BBR, ns)}"
            f.check(cluster == want_cluster, f"cluster_name must be {want_cluster}, got {cluster!r}")
            if envoy and cluster:
                envoy_validate(envoy, value, cluster, f)
    if dr:
        f.check(dr["spec"]["host"] == svc_dns(BBR, ns), f"DestinationRule host must be {svc_dns(BBR, ns)}")
        tls = dr["spec"].get("trafficPolicy", {}).get("tls", {})
        f.check(tls.get("mode") == "SIMPLE", "DestinationRule must originate TLS (SIMPLE)")
        if self_signed:
            f.check(tls.get("insecureSkipVerify") is True and not facts.get("real_certs"),
                    "self-signed variant: no certificate files, verification skipped")
        else:
            f.check(not tls.get("insecureSkipVerify"), "certificate verification must not be skipped")
            f.check(tls.get("credentialName") or tls.get("caCertificates"),
                    "a CA (credentialName or caCertificates) must verify bbr-extproc")
            f.check(tls.get("sni") == svc_dns(BBR, ns), "SNI must be the Service's DNS name")
            f.check(svc_dns(BBR, ns) in tls.get("subjectAltNames", []),
                    "subjectAltNames must name the Service")
            f.check(facts.get("real_certs"), "bbr-extproc must serve the real certificate")


# ---------------------------------------------------------- scenario checks


def check_scenario(docs: Docs, f: Failures, routes: str) -> None:
    """routes: 'model' (X-Gateway-Model-Name) or 'base' (X-Gateway-Base-Model-Name)."""
    deployments = {d["metadata"]["name"]: d for d in objects(docs, "Deployment")}
    f.check(set(deployments) == set(SCENARIO),
            f"model server Deployments must be {sorted(SCENARIO)}, got {sorted(deployments)}")
    pool_pods: dict[str, dict[str, str]] = {}
    served: dict[str, set[str]] = {}
    port_of: dict[str, int] = {}
    for pool, (base, loras, replicas) in SCENARIO.items():
        d = deployments.get(pool)
        if not d:
            continue
        f.check(d["spec"].get("replicas") == replicas, f"{pool}: replicas must be {replicas}")
        tmpl = d["spec"]["template"]
        pool_pods[pool] = tmpl["metadata"].get("labels", {})
        f.check(selects(d["spec"]["selector"]["matchLabels"], pool_pods[pool]),
                f"{pool}: selector must match the pod labels")
        c = tmpl["spec"]["containers"][0]
        f.check(c["image"].startswith(SIM_IMAGE), f"{pool}: image must be the llm-d inference simulator")
        args = c.get("args", [])
        model = argv_values(args, "--model")
        f.check(model == [base], f"{pool}: --model must be {base}, got {model}")
        f.check(argv_values(args, "--max-loras") == ["2"], f"{pool}: --max-loras must be 2")
        names = []
        for word in argv_values(args, "--lora-modules"):
            try:
                names.append(json.loads(word)["name"])
            except (ValueError, KeyError, TypeError):
                f.check(False, f"{pool}: --lora-modules word {word!r} is not JSON with a name")
        f.check(names == loras, f"{pool}: LoRAs must be {loras}, got {names}")
        port = argv_values(args, "--port")
        f.check(port == ["8000"], f"{pool}: --port must be 8000")
        port_of[pool] = 8000
        f.check(container_port(c, 8000), f"{pool}: containerPort 8000 must be declared")
        served[pool] = {base, *names}
    # Adapter maps: one per base model, exactly the LoRAs its pool serves.
    maps = objects(docs, "ConfigMap")
    f.check(len(maps) == len(SCENARIO), f"one adapter ConfigMap per base model, got {len(maps)}")
    for cm in maps:
        data = cm.get("data", {})
        base = data.get("baseModel", "").strip()
        pools = [p for p, (b, _, _) in SCENARIO.items() if b == base]
        if not f.check(pools, f"ConfigMap {cm['metadata']['name']}: unknown baseModel {base!r}"):
            continue
        try:
            listed = yaml.safe_load(data.get("adapters", "")) or []
        except yaml.YAMLError as e:
            listed = []
            f.check(False, f"ConfigMap {cm['metadata']['name']}: adapters is not YAML: {e}")
        f.check(listed == SCENARIO[pools[0]][1],
                f"ConfigMap {cm['metadata']['name']}: adapters {listed} must equal the pool's LoRAs")
    # Backends: Services or InferencePools, each selecting exactly one pool.
    backends: dict[tuple[str, str], str] = {}
    for svc in objects(docs, "Service"):
        hit = [p for p, lab in pool_pods.items() if selects(svc["spec"].get("selector", {}), lab)]
        if f.check(len(hit) == 1, f"Service {svc['metadata']['name']} must select one pool"):
            backends[("Service", svc["metadata"]["name"])] = hit[0]
            for sp in svc["spec"]["ports"]:
                c = deployments[hit[0]]["spec"]["template"]["spec"]["containers"][0]
                f.check(container_port(c, sp.get("targetPort", sp["port"])) == port_of[hit[0]],
                        f"Service {svc['metadata']['name']} must target the server port")
    for ip in objects(docs, "InferencePool"):
        sel = ip["spec"]["selector"]["matchLabels"]
        hit = [p for p, lab in pool_pods.items() if selects(sel, lab)]
        if f.check(len(hit) == 1, f"InferencePool {ip['metadata']['name']} must select one pool"):
            backends[("InferencePool", ip["metadata"]["name"])] = hit[0]
            f.check([t["number"] for t in ip["spec"]["targetPorts"]] == [port_of[hit[0]]],
                    f"InferencePool {ip['metadata']['name']} must target port 8000")
    # Routes: every name routed exactly once, to the pool that serves it.
    header = MODEL_HEADER if routes == "model" else BASE_HEADER
    routed: dict[str, str] = {}
    httproutes = objects(docs, "HTTPRoute")
    f.check(len(httproutes) == len(SCENARIO), f"one HTTPRoute per pool, got {len(httproutes)}")
    for r in httproutes:
        rname = r["metadata"]["name"]
        f.check(any(p.get("kind", "Gateway") == "Gateway" and p["name"] == "inference-gateway"
                    for p in r["spec"]["parentRefs"]), f"{rname}: parent must be inference-gateway")
        total = sum(len(rule.get("matches", [])) for rule in r["spec"]["rules"])
        f.check(total < 128, f"{rname}: {total} matches; an HTTPRoute must hold fewer than 128")
        for rule in r["spec"]["rules"]:
            pools = set()
            for b in rule.get("backendRefs", []):
                kind = b.get("kind", "Service")
                group = b.get("group", "")
                if kind == "Service":
                    f.check(group == "" and b.get("port"), f"{rname}: a Service backendRef needs a port")
                else:
                    f.check(group == "inference.networking.k8s.io",
                            f"{rname}: {kind} backendRef needs group inference.networking.k8s.io")
                pool = backends.get((kind, b["name"]))
                if f.check(pool, f"{rname}: backendRef {kind}/{b['name']} is not a scenario pool"):
                    pools.add(pool)
                    if kind == "Service":
                        f.check(b.get("port") == 8000, f"{rname}: Service backendRef port must be 8000")
            f.check(len(pools) == 1, f"{rname}: each rule must go to exactly one pool")
            f.check(rule.get("timeouts", {}).get("request"), f"{rname}: set a request timeout")
            for m in rule.get("matches", []):
                f.check(m.get("path") == {"type": "PathPrefix", "value": "/"},
                        f"{rname}: every match pairs PathPrefix / with the header")
                hs = m.get("headers", [])
                if not f.check(len(hs) == 1 and hs[0]["name"] == header
                               and hs[0].get("type", "Exact") == "Exact",
                               f"{rname}: every match is one Exact {header} header"):
                    continue
                value = hs[0]["value"]
                f.check(value not in routed, f"{value!r} routed twice")
                if pools:
                    routed[value] = next(iter(pools))
    if routes == "model":
        want = {n: p for p, names in served.items() for n in names}
    else:
        want = {SCENARIO[p][0]: p for p in served}
    f.check(routed == want, f"routes by {header} must be {want}, got {routed}")


def check_scenario_bbr(docs: Docs, f: Failures, facts: dict[str, Any]) -> None:
    want = {f"{pool}-adapters" for pool in SCENARIO}
    got = facts.get("adapter_configmaps", set())
    f.check(want <= got, f"bbr-extproc must mount the scenario adapter ConfigMaps {sorted(want)}, "
                         f"mounts {sorted(got)}")
    scenario_maps = render_cache.get("scenario-models", [])
    names = {cm["metadata"]["name"] for cm in objects(scenario_maps, "ConfigMap")}
    f.check(want <= names, f"the scenario must define {sorted(want)}")


render_cache: dict[str, Docs] = {}


# ------------------------------------------------------------------ targets


class Target:
    def __init__(self, name: str, path: Path, checks: list[Callable[[Docs, Failures], None]]):
        self.name, self.path, self.checks = name, path, checks


def bbr_checks(provider: str, envoy: str, self_signed: bool = False,
               scenario: bool = False) -> list[Callable[[Docs, Failures], None]]:
    def run(docs: Docs, f: Failures) -> None:
        facts = check_bbr_common(docs, f)
        if provider == "none":
            check_none(docs, f, facts)
        elif provider == "gke":
            check_gke(docs, f, facts)
        else:
            check_istio(docs, f, facts, envoy, self_signed)
        if scenario:
            check_scenario_bbr(docs, f, facts)
        if self_signed:
            fl = facts.get("flags", {})
            f.check("--cert-path" not in fl and "--key-path" not in fl,
                    "self-signed variant must not pass certificate files")
        else:
            f.check(facts.get("real_certs"), "the default serves a real certificate (--cert-path)")
    return [run]


def targets(tmp: Path, envoy: str) -> list[Target]:
    ov, sc, comp = KUBE / "overlays", KUBE / "scenario", KUBE / "components"
    out = []
    for p in ("none", "gke", "istio"):
        out.append(Target(f"overlays/{p}", ov / p, bbr_checks(p, envoy)))
    out.append(Target("overlays/istio in namespace llm", overlay_in_namespace(tmp, "istio", "llm"),
                      bbr_checks("istio", envoy)))
    out.append(Target("overlays/gke in namespace llm", overlay_in_namespace(tmp, "gke", "llm"),
                      bbr_checks("gke", envoy)))
    for p in ("none", "istio"):
        d = compose(tmp, f"{p}-self-signed", [ov / p], [comp / "self-signed-tls"])
        out.append(Target(f"overlays/{p} + components/self-signed-tls", d,
                          bbr_checks(p, envoy, self_signed=True)))
    out.append(Target("scenario", sc, [lambda d, f: check_scenario(d, f, "model")]))
    out.append(Target("scenario/by-base-model", sc / "by-base-model",
                      [lambda d, f: check_scenario(d, f, "base")]))
    out.append(Target("scenario/inferencepool", sc / "inferencepool",
                      [lambda d, f: check_scenario(d, f, "model")]))
    for p in ("none", "gke", "istio"):
        out.append(Target(f"scenario/bbr-{p}", sc / f"bbr-{p}", bbr_checks(p, envoy, scenario=True)))
    return out


def check_docs(t: Target, docs: Docs, crd: dict[str, Any], versions: list[str]) -> Failures:
    f = Failures(t.name)
    check_schemas(docs, f, crd, versions)
    for c in t.checks:
        try:
            c(docs, f)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
            f.check(False, f"malformed object ({type(e).__name__}: {e})")
    return f


# ---------------------------------------------------------------- self-test


def _dep(docs: Docs) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == BBR)


def _container(docs: Docs) -> dict[str, Any]:
    return _dep(docs)["spec"]["template"]["spec"]["containers"][0]


def _kind(docs: Docs, kind: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind)


def _tc(docs: Docs) -> dict[str, Any]:
    return _kind(docs, "EnvoyFilter")["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]


# (target, what is broken, mutation). Each must make the checks fail.
BREAKAGES: list[tuple[str, str, Callable[[Docs], None]]] = [
    ("overlays/none", "unknown field in a core object (strict schema)",
     lambda d: _container(d).update(imagePullPolice="Always")),
    ("overlays/none", "wrong type in a core object",
     lambda d: _container(d)["ports"][0].update(containerPort="9004")),
    ("overlays/none", "unknown core kind",
     lambda d: d.append({"apiVersion": "v1", "kind": "Gizmo", "metadata": {"name": "x"}})),
    ("overlays/none", "readiness probe dropped",
     lambda d: _container(d).pop("readinessProbe")),
    ("overlays/none", "liveness probe on the wrong port",
     lambda d: _container(d)["livenessProbe"]["grpc"].update(port=9004)),
    ("overlays/none", "root filesystem writable",
     lambda d: _container(d)["securityContext"].update(readOnlyRootFilesystem=False)),
    ("overlays/none", "RBAC added",
     lambda d: d.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                         "metadata": {"name": "x", "namespace": "default"}, "rules": []})),
    ("overlays/none", "adapter ConfigMap not mounted (volumeMounts lost in a patch)",
     lambda d: _container(d).update(volumeMounts=[m for m in _container(d)["volumeMounts"]
                                                  if "adapters" not in m["mountPath"]])),
    ("overlays/none", "cleartext appProtocol with TLS on",
     lambda d: _kind(d, "Service")["spec"]["ports"][0].update(appProtocol="kubernetes.io/h2c")),
    ("overlays/gke", "typo in a GCPRoutingExtension field (CRD schema)",
     lambda d: _kind(d, "GCPRoutingExtension")["spec"]["extensionChains"][0]["extensions"][0]
     .update(requestBodySendmode="FullDuplexStreamed")),
    ("overlays/gke", "buffered-style body mode",
     lambda d: _kind(d, "GCPRoutingExtension")["spec"]["extensionChains"][0]["extensions"][0]
     .update(requestBodySendMode="Streamed")),
    ("overlays/gke", "timeout over the service maximum",
     lambda d: _kind(d, "GCPRoutingExtension")["spec"]["extensionChains"][0]["extensions"][0]
     .update(timeout="30s")),
    ("overlays/gke", "health check on the ext_proc port",
     lambda d: _kind(d, "HealthCheckPolicy")["spec"]["default"]["config"]["grpcHealthCheck"]
     .update(port=9004)),
    ("overlays/istio", "verification skipped in the default",
     lambda d: _kind(d, "DestinationRule")["spec"]["trafficPolicy"]["tls"]
     .update(insecureSkipVerify=True)),
    ("overlays/istio", "filter not scoped to the Gateway",
     lambda d: _kind(d, "EnvoyFilter")["spec"].pop("targetRefs")),
    ("overlays/istio", "response bodies held (SSE)",
     lambda d: _tc(d)["processing_mode"].update(response_body_mode="BUFFERED")),
    ("overlays/istio", "Envoy rejects the filter (unknown field)",
     lambda d: _tc(d).update(message_timeout_ms=10)),
    ("overlays/istio", "Envoy rejects the filter (FULL_DUPLEX_STREAMED without trailers)",
     lambda d: _tc(d)["processing_mode"].update(request_trailer_mode="SKIP")),
    ("overlays/istio", "cluster name in the wrong namespace",
     lambda d: _tc(d)["grpc_service"]["envoy_grpc"].update(
         cluster_name="outbound|9004||bbr-extproc.other.svc.cluster.local")),
    ("scenario", "a LoRA routed to the wrong pool",
     lambda d: next(r for r in d if r["kind"] == "HTTPRoute"
                    and r["metadata"]["name"] == "llm-llama-route")["spec"]["rules"][0]["matches"]
     [1]["headers"][0].update(value="ski-resorts")),
    ("scenario", "adapter map out of step with the simulator",
     lambda d: next(c for c in d if c["kind"] == "ConfigMap"
                    and "deepseek" in c["metadata"]["name"])["data"]
     .update(adapters="- ski-resorts\n")),
    ("scenario", "HTTPRoute header match type misspelt (CRD schema)",
     lambda d: next(r for r in d if r["kind"] == "HTTPRoute")["spec"]["rules"][0]["matches"][0]
     ["headers"][0].update(type="exact")),
    ("scenario", "replicas changed",
     lambda d: next(x for x in d if x["kind"] == "Deployment"
                    and x["metadata"]["name"] == "vllm-llama3-8b-instruct")["spec"]
     .update(replicas=1)),
    ("scenario/inferencepool", "InferencePool selecting no pool",
     lambda d: _kind(d, "InferencePool")["spec"]["selector"]["matchLabels"].update(app="nope")),
    ("scenario/bbr-istio", "scenario adapter maps not mounted",
     lambda d: _dep(d)["spec"]["template"]["spec"].update(volumes=[
         v for v in _dep(d)["spec"]["template"]["spec"]["volumes"]
         if "vllm" not in v["name"]])),
]


# ------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubectl", default="kubectl")
    ap.add_argument("--envoy", required=True, help="Envoy binary for the EnvoyFilter check")
    ap.add_argument("--kubernetes-version", action="append", dest="versions")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--out", help="also write each rendering here (for inspection)")
    a = ap.parse_args()
    versions = a.versions or DEFAULT_K8S_VERSIONS
    crd = load_crd_schemas()
    failed = 0
    passed = 0
    with tempfile.TemporaryDirectory(prefix="bbr-manifests-") as tmpdir:
        tmp = Path(tmpdir)
        render_cache["scenario-models"] = render(a.kubectl, KUBE / "scenario" / "models")
        rendered: dict[str, tuple[Target, Docs]] = {}
        for t in targets(tmp, a.envoy):
            try:
                docs = render(a.kubectl, t.path)
            except RuntimeError as e:
                print(f"FAIL {t.name}: {e}")
                failed += 1
                continue
            rendered[t.name] = (t, docs)
            if a.out:
                Path(a.out).mkdir(parents=True, exist_ok=True)
                safe = t.name.replace("/", "_").replace(" ", "_").replace("+", "with")
                (Path(a.out) / f"{safe}.yaml").write_text(yaml.safe_dump_all(docs))
            f = check_docs(t, docs, crd, versions)
            kinds = sorted({f"{d['kind']}" for d in docs})
            if f.items:
                failed += 1
                print(f"FAIL {t.name} ({len(docs)} objects)")
                for item in f.items:
                    print(f"     - {item}")
            else:
                passed += 1
                print(f"ok   {t.name}: {len(docs)} objects ({', '.join(kinds)})")
        if a.self_test:
            for name, what, mutate in BREAKAGES:
                if name not in rendered:
                    print(f"FAIL self-test {name}: not rendered")
                    failed += 1
                    continue
                t, docs = rendered[name]
                broken = copy.deepcopy(docs)
                mutate(broken)
                f = check_docs(t, broken, crd, versions)
                if f.items:
                    passed += 1
                    print(f"ok   self-test {name}: caught {what}: {f.items[0][:110]}")
                else:
                    failed += 1
                    print(f"FAIL self-test {name}: NOT caught: {what}")
    print(f"\nKubernetes versions (core kinds, strict): {', '.join(versions)}")
    print("Custom resources (project schemas, crd-schemas.yaml): " + ", ".join(sorted(crd)))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
