#!/usr/bin/env python3
"""Renders the body-based-routing chart with a real Helm and checks every object.

Run by scripts/validate-manifests, which provides Helm (.tools/bin/helm), the
project virtualenv (kubernetes-validate, jsonschema, PyYAML) and Envoy.

1. Helm. `helm lint` per provider; `helm template body-based-router
   deploy/charts/body-based-routing` for each provider and for the values
   combinations of the chart's extras; the guide's three commands with their
   exact arguments; values that cannot work must stop the rendering.
2. Schema. Core kinds: kubernetes-validate's bundled OpenAPI schemas, strict
   (unknown fields rejected), for every pinned Kubernetes version. Custom
   resources: the `openAPIV3Schema` of the real CRDs in ../shared/crds
   (beside the repository), made strict the same way. A kind with neither is
   an error, never a warning.
3. Envoy. The Istio EnvoyFilter's ext_proc filter is loaded by a real Envoy
   (`envoy --mode validate`); the plain Envoy files in deploy/envoy/ (which
   the end-to-end tests run) are loaded too, and their ext_proc filter must
   equal the chart's field by field.
4. Meaning. Upstream's names, labels, arguments, ports, RBAC and provider
   objects (../shared/reference/upstream-chart.md), every upstream values key
   with its default, our extras, TLS wiring, and the reference scenario
   (deploy/scenario: pools, LoRAs, adapter maps, routes).

`--self-test` plants breakages (in rendered objects, in a copy of the chart,
in the Envoy filter) and fails unless every one is caught.
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

try:  # cel-python (scripts/install-tools): evaluates the CRDs' CEL rules.
    import celpy
except ImportError:  # pragma: no cover - reported in the summary
    celpy = None

HERE = Path(__file__).resolve().parent
DEPLOY = HERE.parent
REPO = DEPLOY.parent
CHART = DEPLOY / "charts" / "body-based-routing"
SCENARIO_DIR = DEPLOY / "scenario"
ENVOY_DIR = DEPLOY / "envoy"
RELEASE = "body-based-router"

# Oldest supported (native gRPC probes are GA since 1.27) and newest bundled.
DEFAULT_K8S_VERSIONS = ["1.30.0", "1.37.0"]

# Every key of the upstream chart's values.yaml with its default
# (upstream-chart.md). Ours must hold each one with the same value, except
# where noted in the chart README (the image, which is ours).
UPSTREAM_VALUES: dict[str, Any] = {
    "bbr.name": "body-based-router",
    "bbr.replicas": 1,
    "bbr.port": 9004,
    "bbr.healthCheckPort": 9005,
    "bbr.multiNamespace": False,
    "bbr.flags": {"v": 3},
    "bbr.plugins": [
        {"type": "body-field-to-header", "name": "model-extractor",
         "json": '{"fieldName":"model","headerName":"X-Gateway-Model-Name"}'},
        {"type": "base-model-to-header", "name": "base-model-mapper"},
    ],
    "bbr.tracing.enabled": False,
    "bbr.tracing.otelExporterEndpoint": "http://localhost:4317",
    "bbr.tracing.sampling.sampler": "parentbased_traceidratio",
    "bbr.tracing.sampling.samplerArg": "0.1",
    "provider.name": "none",
    "provider.istio.envoyFilter.operation": "INSERT_FIRST",
    "provider.istio.envoyFilter.anchorSubFilter": "",
    "inferenceGateway.name": "inference-gateway",
}
# Upstream keys whose value is ours (the image of bbr-extproc, not upstream's).
UPSTREAM_KEYS_OURS = ["bbr.image.registry", "bbr.image.repository", "bbr.image.tag",
                      "bbr.image.pullPolicy", "bbr.tracing.otelServiceName"]

# The reference scenario (design.md): pool -> (base model, LoRAs, replicas).
SCENARIO = {
    "vllm-llama3-8b-instruct": ("meta-llama/Llama-3.1-8B-Instruct",
                                ["food-review-1", "food-review-2"], 3),
    "vllm-deepseek-r1": ("deepseek/vllm-deepseek-r1", ["ski-resorts", "movie-critique"], 1),
}
# The scenario's model rewrite (the guide's extended): requested name ->
# [(target, weight)], as the object, as the file bbr-extproc mounts, and as
# the example gateway's embedded rule.
SCENARIO_REWRITES = {"food-review": [("food-review-1", 90), ("food-review-2", 10)]}
REWRITE_CONFIGMAP = "food-review-rewrites"
GATEWAY_REWRITES = REPO / "bbr-axum-example" / "config" / "model-rewrites.yaml"
SIM_IMAGE = "ghcr.io/llm-d/llm-d-inference-sim:"
MODEL_HEADER = "X-Gateway-Model-Name"
BASE_HEADER = "X-Gateway-Base-Model-Name"
BBR_MANAGED = "inference.networking.k8s.io/bbr-managed"
RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
# Kinds the chart renders whose CRD is not available here: checked by meaning
# only (check_bbr), never silently passed as schema-valid.
NO_CRD_HERE = {("cert-manager.io/v1", "Certificate")}

# The ext_proc settings the chart and deploy/envoy share (processing mode,
# timeouts, message limits, failure mode). Envoy files whose body mode is
# FULL_DUPLEX_STREAMED must carry exactly the chart's filter; the others the
# same except the body mode and what that mode needs.
FULL_DUPLEX_ENVOY_FILES = ["bbr-full-duplex.yaml", "bbr-full-duplex-tls.yaml",
                           "bbr-base-model.yaml"]
OTHER_MODE_ENVOY_FILES = {
    "bbr-streamed.yaml": {"request_body_mode": "STREAMED"},
    "bbr-buffered.yaml": {"request_body_mode": "BUFFERED"},
}
MODE_ONLY_FIELDS = {"send_body_without_waiting_for_header_response"}

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


def dig(d: Any, path: str, default: Any = None) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return default
        d = d[part]
    return d


# ------------------------------------------------------------------- Helm


class Helm:
    def __init__(self, binary: str) -> None:
        self.binary = binary
        # Helm must not read or write the user's settings or any cluster's.
        self.home = tempfile.mkdtemp(prefix="bbr-helm-home-")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBE"))}
        self.env.update(HOME=self.home, HELM_CACHE_HOME=f"{self.home}/cache",
                        HELM_CONFIG_HOME=f"{self.home}/config",
                        HELM_DATA_HOME=f"{self.home}/data", KUBECONFIG=f"{self.home}/none")

    def run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, *args], capture_output=True, text=True,
                              timeout=120, env=self.env, cwd=REPO)

    def template(self, args: list[str], chart: Path = CHART) -> Docs:
        proc = self.run(["template", RELEASE, str(chart), *args])
        if proc.returncode != 0:
            raise RuntimeError(f"helm template {' '.join(args)} failed:\n{proc.stderr.strip()}")
        return [d for d in yaml.safe_load_all(proc.stdout) if d]

    def version(self) -> str:
        return self.run(["version", "--short"]).stdout.strip()

    def close(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


# ---------------------------------------------------------------- schemas


OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 253,
                 "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
        "namespace": {"type": "string", "maxLength": 63,
                      "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def strict(node: Any) -> Any:
    """A CRD's structural schema as JSON Schema that rejects unknown fields
    (like `kubectl apply --validate=strict`): every object with `properties`
    and no `additionalProperties` or `x-kubernetes-preserve-unknown-fields`
    gets `additionalProperties: false`; `nullable` admits null."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items()}
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


class CrdSchemas:
    """(apiVersion, kind) -> validator, from every CRD under a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
        self.raw: dict[tuple[str, str], dict[str, Any]] = {}
        self.sources: dict[tuple[str, str], str] = {}
        self.cel_rules = 0
        self.cel = CelRules()
        for path in sorted(directory.rglob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for v in spec["versions"]:
                    if not v.get("served", False):
                        continue
                    schema = v["schema"]["openAPIV3Schema"]
                    self.cel_rules += json.dumps(schema).count('"x-kubernetes-validations"')
                    s = strict(schema)
                    s.setdefault("properties", {})
                    s["properties"]["apiVersion"] = {"const": f"{spec['group']}/{v['name']}"}
                    s["properties"]["kind"] = {"const": spec["names"]["kind"]}
                    s["properties"]["metadata"] = OBJECT_META
                    s["required"] = sorted({*s.get("required", []), "apiVersion", "kind",
                                            "metadata"})
                    s["additionalProperties"] = False
                    jsonschema.Draft7Validator.check_schema(s)
                    key = (f"{spec['group']}/{v['name']}", spec["names"]["kind"])
                    self.validators[key] = jsonschema.Draft7Validator(s)
                    self.raw[key] = schema
                    self.sources[key] = str(path.relative_to(directory))

    def get(self, doc: dict[str, Any]):
        return self.validators.get((doc.get("apiVersion"), doc.get("kind")))

    def kinds(self) -> set[str]:
        return {k for _, k in self.validators}


def check_schemas(docs: Docs, f: Failures, crds: CrdSchemas, versions: list[str]) -> None:
    for doc in docs:
        kind, name = doc.get("kind"), dig(doc, "metadata.name")
        where = f"{kind}/{name}"
        validator = crds.get(doc)
        if validator is not None:
            key = (doc["apiVersion"], kind)
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
            for e in errors:
                path = ".".join(str(p) for p in e.path)
                f.check(False, f"{where}: {path}: {e.message[:200]} (CRD {crds.sources[key]})")
            if not errors:
                for path, message in crds.cel.check(crds.raw[key], doc):
                    f.check(False, f"{where}: {path}: CEL rule fails: {message} (CRD {crds.sources[key]})")
            continue
        if kind in crds.kinds():
            f.check(False, f"{where}: apiVersion {doc.get('apiVersion')} is not served by its CRD")
            continue
        if (doc.get("apiVersion"), kind) in NO_CRD_HERE:
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.utils.SchemaNotFoundError:
                f.check(False, f"{where}: no schema for {doc.get('apiVersion')} {kind} "
                               "(neither a Kubernetes kind nor a CRD under shared/crds)")
                break
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                f.check(False, f"{where}: {path}: {e.message[:200]} (Kubernetes {version}, strict)")


class CelRules:
    """Evaluates a CRD's `x-kubernetes-validations` on an object, as the API
    server does after defaulting: `self` is the value at the rule's node.
    Transition rules (`oldSelf`) do not apply to a create; rules cel-python
    cannot compile or run (Kubernetes-only functions) are counted as skipped,
    never as passed."""

    def __init__(self) -> None:
        self.env = celpy.Environment() if celpy else None
        self.programs: dict[str, Any] = {}
        self.evaluated = 0
        self.skipped: dict[str, str] = {}

    def program(self, rule: str) -> Any:
        if rule not in self.programs:
            try:
                self.programs[rule] = self.env.program(self.env.compile(rule))
            except Exception as err:  # celpy raises several unrelated types
                self.programs[rule] = None
                self.skipped[rule] = f"compile: {type(err).__name__}"
        return self.programs[rule]

    def check(self, schema: dict[str, Any], doc: Any) -> list[tuple[str, str]]:
        if self.env is None:
            return []
        out: list[tuple[str, str]] = []
        self._walk(schema, defaulted(schema, copy.deepcopy(doc)), "", out)
        return out

    def _walk(self, schema: dict[str, Any], value: Any, path: str,
              out: list[tuple[str, str]]) -> None:
        for v in schema.get("x-kubernetes-validations", []):
            rule = v["rule"]
            if "oldSelf" in rule:
                continue
            prg = self.program(rule)
            if prg is None:
                continue
            try:
                result = prg.evaluate({"self": celpy.json_to_cel(value)})
            except Exception as err:
                self.skipped[rule] = f"run: {type(err).__name__}: {str(err)[:80]}"
                continue
            if isinstance(result, Exception):
                self.skipped[rule] = f"run: {str(result)[:80]}"
                continue
            self.evaluated += 1
            if not bool(result):
                out.append((path or "(root)", v.get("message") or rule))
        if isinstance(value, dict):
            props = schema.get("properties", {})
            for k, sub in value.items():
                if k in props:
                    self._walk(props[k], sub, f"{path}.{k}" if path else k, out)
                elif isinstance(schema.get("additionalProperties"), dict):
                    self._walk(schema["additionalProperties"], sub, f"{path}.{k}", out)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for i, sub in enumerate(value):
                self._walk(schema["items"], sub, f"{path}.{i}", out)


def defaulted(schema: dict[str, Any], value: Any) -> Any:
    """Applies the schema's `default`s, as the API server does before validation."""
    if isinstance(value, dict):
        for k, sub in schema.get("properties", {}).items():
            if k not in value and "default" in sub:
                value[k] = copy.deepcopy(sub["default"])
            if k in value:
                value[k] = defaulted(sub, value[k])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [defaulted(schema["items"], v) for v in value]
    return value


# ------------------------------------------------------------------ Envoy


_ENVOY_VERDICTS: dict[str, str | None] = {}


def envoy_run(envoy: str, config: dict[str, Any] | str) -> str | None:
    """`envoy --mode validate`; None when accepted, else Envoy's reason.
    Renderings share filters, so each distinct config is loaded once."""
    text = config if isinstance(config, str) else json.dumps(config, sort_keys=True)
    if text not in _ENVOY_VERDICTS:
        _ENVOY_VERDICTS[text] = _envoy_validate(envoy, text)
    return _ENVOY_VERDICTS[text]


def _envoy_validate(envoy: str, config: str) -> str | None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as tmp:
        tmp.write(config)
    try:
        proc = subprocess.run(
            [envoy, "--mode", "validate", "-c", tmp.name, "-l", "error",
             "--base-id", str(os.getpid() % 60000 + 1000)],
            capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(tmp.name)
    if proc.returncode == 0:
        return None
    lines = (proc.stdout + proc.stderr).strip().splitlines() or ["(no output)"]
    return re.sub(r"^(\[[^\]]*\]\s*)+", "", lines[-1])


def envoy_validate_filter(envoy: str, filter_value: dict[str, Any], cluster: str,
                          f: Failures) -> None:
    """Loads the EnvoyFilter's HTTP filter into a real Envoy listener."""
    bootstrap = {"static_resources": {
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
                        "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 404}}]}]},
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
            "name": cluster, "type": "STATIC",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                             "HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": 9004}}}}]}]},
        }],
    }}
    reason = envoy_run(envoy, bootstrap)
    f.check(reason is None, f"Envoy rejects the EnvoyFilter's ext_proc filter: {reason}")


def envoy_file_text(name: str) -> str:
    """A deploy/envoy file with its port placeholders filled, as the tests do."""
    text = (ENVOY_DIR / name).read_text()
    ports = {"LISTEN_PORT": 10080, "ADMIN_PORT": 10081, "EXTPROC_PORT": 10082,
             "LLAMA_PORT": 10083, "DEEPSEEK_PORT": 10084, "DEFAULT_PORT": 10085}
    for k, v in ports.items():
        text = text.replace("${" + k + "}", str(v))
    return text


def envoy_file_ext_proc(config: dict[str, Any]) -> dict[str, Any] | None:
    for listener in dig(config, "static_resources.listeners", []):
        for chain in listener.get("filter_chains", []):
            for nf in chain.get("filters", []):
                for hf in dig(nf, "typed_config.http_filters", []):
                    if dig(hf, "typed_config.@type", "").endswith("ext_proc.v3.ExternalProcessor"):
                        return hf["typed_config"]
    return None


def without_cluster(tc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(tc)
    out.get("grpc_service", {}).get("envoy_grpc", {}).pop("cluster_name", None)
    return out


def diff_fields(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            p = f"{path}.{k}" if path else k
            if k not in a:
                out.append(f"{p}: only in the Envoy file ({b[k]!r})")
            elif k not in b:
                out.append(f"{p}: only in the chart ({a[k]!r})")
            else:
                out.extend(diff_fields(a[k], b[k], p))
        return out
    return [] if a == b else [f"{path}: chart {a!r}, Envoy file {b!r}"]


def check_envoy_files(chart_tc: dict[str, Any], f: Failures, envoy: str | None,
                      files: dict[str, dict[str, Any]] | None = None) -> None:
    """deploy/envoy's ext_proc filters agree with the chart's, field by field."""
    chart = without_cluster(chart_tc)
    files = files if files is not None else load_envoy_files()
    for name in FULL_DUPLEX_ENVOY_FILES:
        tc = envoy_file_ext_proc(files[name])
        if f.check(tc, f"deploy/envoy/{name}: no ext_proc filter"):
            for d in diff_fields(chart, without_cluster(tc)):
                f.check(False, f"deploy/envoy/{name} differs from the chart's EnvoyFilter: {d}")
    for name, mode in OTHER_MODE_ENVOY_FILES.items():
        tc = envoy_file_ext_proc(files[name])
        if not f.check(tc, f"deploy/envoy/{name}: no ext_proc filter"):
            continue
        want = copy.deepcopy(chart)
        want["processing_mode"].update(mode)
        got = without_cluster(tc)
        for k in MODE_ONLY_FIELDS:
            got.pop(k, None)
        for d in diff_fields(want, got):
            f.check(False, f"deploy/envoy/{name} differs from the chart's EnvoyFilter "
                           f"(beyond its body mode): {d}")
    if envoy:
        for name in [*FULL_DUPLEX_ENVOY_FILES, *OTHER_MODE_ENVOY_FILES, "header-only.yaml"]:
            reason = envoy_run(envoy, envoy_file_text(name))
            f.check(reason is None, f"Envoy rejects deploy/envoy/{name}: {reason}")


def load_envoy_files() -> dict[str, dict[str, Any]]:
    names = [*FULL_DUPLEX_ENVOY_FILES, *OTHER_MODE_ENVOY_FILES]
    return {n: yaml.safe_load(envoy_file_text(n)) for n in names}


# ---------------------------------------------------------------- helpers


def objects(docs: Docs, kind: str) -> Docs:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: Docs, kind: str, name: str, f: Failures) -> dict[str, Any] | None:
    found = [d for d in objects(docs, kind) if dig(d, "metadata.name") == name]
    f.check(len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}")
    return found[0] if len(found) == 1 else None


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_port(container: dict[str, Any], ref: Any) -> int | None:
    for p in container.get("ports", []):
        if ref in (p.get("name"), p.get("containerPort")):
            return p["containerPort"]
    return None


def svc_dns(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local"


def argv_values(args: list[str], flag: str) -> list[str]:
    """Values after a flag that takes several argv words, up to the next flag."""
    if flag not in args:
        return []
    out = []
    for a in args[args.index(flag) + 1:]:
        if a.startswith("--"):
            break
        out.append(a)
    return out


def eq_flags(args: list[str]) -> dict[str, str]:
    """bbr-extproc's own `--name=value` flags."""
    return dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)


def parse_upstream_args(args: list[str]) -> tuple[list[str], dict[str, str], list[str], str | None]:
    """Upstream's argument layout: `--streaming`, then `--KEY VALUE` pairs of
    bbr.flags, then `--plugin SPEC` pairs, then `--tracing=BOOL`."""
    rest = list(args)
    head = [rest.pop(0)] if rest else []
    flags: dict[str, str] = {}
    plugins: list[str] = []
    tracing = None
    while rest:
        a = rest[0]
        if a == "--plugin" and len(rest) > 1:
            plugins.append(rest[1])
            rest = rest[2:]
        elif a.startswith("--tracing="):
            tracing = a.split("=", 1)[1]
            rest = rest[1:]
            break
        elif a.startswith("--") and "=" not in a and len(rest) > 1 and not plugins:
            flags[a[2:]] = rest[1]
            rest = rest[2:]
        elif a.startswith("--") and "=" in a and a.split("=", 1)[1] in ("true", "false") \
                and not plugins:
            k, v = a[2:].split("=", 1)
            flags[k] = v
            rest = rest[1:]
        else:
            break
    return head, flags, plugins, tracing


# ------------------------------------------------------------ the chart


class Expect:
    """What one rendering must hold, from the values it was rendered with."""

    def __init__(self, namespace: str = "default", provider: str = "none",
                 values: dict[str, Any] | None = None) -> None:
        base = yaml.safe_load((CHART / "values.yaml").read_text())
        self.values = merge(base, values or {})
        self.namespace = namespace
        self.provider = provider
        self.values["provider"]["name"] = provider

    def v(self, path: str, default: Any = None) -> Any:
        return dig(self.values, path, default)


def merge(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(a.get(k), v)
        return out
    return copy.deepcopy(b)


def check_values_file(f: Failures, values_path: Path = CHART / "values.yaml") -> None:
    """Every upstream values key, with upstream's default."""
    values = yaml.safe_load(values_path.read_text())
    for key, want in UPSTREAM_VALUES.items():
        got = dig(values, key, "<missing>")
        f.check(got == want, f"values.yaml: upstream key {key} must default to {want!r}, got {got!r}")
    for key in UPSTREAM_KEYS_OURS:
        f.check(dig(values, key, "<missing>") != "<missing>", f"values.yaml: upstream key {key} missing")
    chart = yaml.safe_load((values_path.parent / "Chart.yaml").read_text())
    f.check(chart.get("apiVersion") == "v2" and chart.get("name") == "body-based-routing"
            and chart.get("type") == "application",
            "Chart.yaml must be apiVersion v2, name body-based-routing, type application")
    cargo = (REPO / "Cargo.toml").read_text()
    m = re.search(r'^\[workspace\.package\][^\[]*?^version\s*=\s*"([^"]+)"', cargo, re.M | re.S)
    if f.check(m, "Cargo.toml: no [workspace.package] version"):
        f.check(str(chart.get("appVersion")) == m.group(1),
                f"Chart.yaml appVersion {chart.get('appVersion')!r} must be the workspace "
                f"version {m.group(1)!r} (the image's)")
        f.check(str(dig(values, "bbr.image.tag")) in (m.group(1), ""),
                "bbr.image.tag must be the workspace version (or empty: appVersion)")


def check_bbr(docs: Docs, f: Failures, e: Expect) -> dict[str, Any]:
    """The objects every provider renders; returns facts for the others."""
    facts: dict[str, Any] = {}
    name, ns = e.v("bbr.name"), e.namespace
    sa_name = f"{name}-{RELEASE}"
    f.check(not objects(docs, "Secret"), "no Secret may be rendered (no shipped keys)")
    for d in docs:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            f.check(dig(d, "metadata.namespace") == ns,
                    f"{d['kind']}/{dig(d, 'metadata.name')} must be in namespace {ns}")
        f.check(dig(d, "metadata.labels.app") == name,
                f"{d['kind']}/{dig(d, 'metadata.name')} must carry label app: {name}")
    sa = one(docs, "ServiceAccount", sa_name, f)
    dep = one(docs, "Deployment", name, f)
    svc = one(docs, "Service", name, f)
    if not (sa and dep and svc):
        return facts
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = dig(spec, "template.metadata.labels", {})
    f.check(spec.get("selector") == {"matchLabels": {"app": name}},
            f"Deployment selector must be exactly app: {name} (as upstream)")
    f.check(labels.get("app") == name, f"pod label app: {name}")
    f.check(spec.get("replicas") == e.v("bbr.replicas"), f"replicas must be {e.v('bbr.replicas')}")
    f.check(dig(spec, "strategy.rollingUpdate.maxUnavailable") == 0,
            "rolling updates must keep maxUnavailable: 0")
    f.check(pod.get("serviceAccountName") == sa_name,
            f"serviceAccountName must be {sa_name} (<bbr.name>-<release>)")
    containers = pod.get("containers", [])
    if not f.check([c["name"] for c in containers] == ["bbr"], "one container, named bbr"):
        return facts
    c = containers[0]
    facts["container"], facts["pod"], facts["dep"] = c, pod, dep
    image = e.v("bbr.image")
    want_image = f"{image['registry']}/{image['repository']}:{image['tag']}" if image["registry"] \
        else f"{image['repository']}:{image['tag']}"
    f.check(c.get("image") == want_image, f"image must be {want_image}, got {c.get('image')!r}")
    f.check(c.get("imagePullPolicy") == image["pullPolicy"], "imagePullPolicy from the values")
    args = c.get("args", [])
    head, flags, plugins, tracing = parse_upstream_args(args)
    f.check(head == ["--streaming"], f"the first argument must be --streaming, got {head}")
    want_flags = {k: (str(v).lower() if isinstance(v, bool) else str(v))
                  for k, v in e.v("bbr.flags").items()}
    f.check(flags == want_flags, f"flags (--KEY VALUE) must be {want_flags}, got {flags}")
    want_plugins = [":".join(x for x in (p["type"], p["name"], p.get("json")) if x)
                    for p in e.v("bbr.plugins")]
    f.check(plugins == want_plugins, f"--plugin arguments must be {want_plugins}, got {plugins}")
    for p in plugins:
        parts = p.split(":", 2)
        f.check(len(parts) >= 2 and all(parts[:2]), f"--plugin {p!r} must be type:name[:json]")
        if len(parts) == 3:
            try:
                json.loads(parts[2])
            except ValueError:
                f.check(False, f"--plugin {p!r}: the JSON part does not parse")
    want_tracing = "true" if e.v("bbr.tracing.enabled") else "false"
    f.check(tracing == want_tracing, f"--tracing={want_tracing} must follow the plugins")
    own = eq_flags(args)
    facts["flags"] = own
    for flag, key in (("--grpc-port", "bbr.port"), ("--grpc-health-port", "bbr.healthCheckPort"),
                      ("--metrics-port", "bbr.metricsPort")):
        f.check(own.get(flag) == str(e.v(key)), f"{flag}={e.v(key)} expected, got {own.get(flag)!r}")
    grpc, health, metrics = e.v("bbr.port"), e.v("bbr.healthCheckPort"), e.v("bbr.metricsPort")
    f.check(len({grpc, health, metrics}) == 3, "the three ports must differ")
    for p in (grpc, health, metrics):
        f.check(container_port(c, p), f"containerPort {p} must be declared")
    # Our extras, rendered only when set.
    extras = {"--max-model-len": "bbr.limits.maxModelLen", "--max-depth": "bbr.limits.maxDepth",
              "--max-scan-bytes": "bbr.limits.maxScanBytes",
              "--max-body-bytes": "bbr.limits.maxBodyBytes",
              "--duplicate-keys": "bbr.duplicateKeys", "--on-missing-model": "bbr.missingModel"}
    for flag, key in extras.items():
        want = e.v(key)
        if flag in ("--max-scan-bytes", "--max-body-bytes") and want not in (None, ""):
            want = f"{want}B"  # bbr-extproc refuses a size without a unit
        got = own.get(flag)
        f.check(got == (str(want) if want not in (None, "") else None),
                f"{flag} must be {want!r} (from {key}), got {got!r}")
    for extra in e.v("bbr.extraArgs") or []:
        f.check(extra in args, f"extra argument {extra!r} missing")
    # Environment: NAMESPACE unless multiNamespace; OTEL_* with tracing.
    env = {x["name"]: x for x in c.get("env", [])}
    if e.v("bbr.multiNamespace"):
        f.check("NAMESPACE" not in env, "multiNamespace: no NAMESPACE env")
    else:
        f.check(dig(env.get("NAMESPACE", {}), "valueFrom.fieldRef.fieldPath") == "metadata.namespace",
                "env NAMESPACE must come from the pod's namespace")
    otel = {"OTEL_SERVICE_NAME": e.v("bbr.tracing.otelServiceName"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": e.v("bbr.tracing.otelExporterEndpoint"),
            "OTEL_TRACES_SAMPLER": e.v("bbr.tracing.sampling.sampler"),
            "OTEL_TRACES_SAMPLER_ARG": str(e.v("bbr.tracing.sampling.samplerArg")),
            "OTEL_TRACES_EXPORTER": "otlp"}
    if e.v("bbr.tracing.enabled"):
        for k, v in otel.items():
            f.check(env.get(k, {}).get("value") == v, f"tracing: env {k}={v!r} expected")
        f.check("OTEL_RESOURCE_ATTRIBUTES" in env, "tracing: env OTEL_RESOURCE_ATTRIBUTES expected")
    else:
        f.check(not [k for k in env if k.startswith("OTEL_")], "no OTEL_* env without tracing")
    # Probes: Kubernetes' own gRPC probe on the health port.
    for probe in ("readinessProbe", "livenessProbe"):
        if e.v("bbr.probes.enabled"):
            f.check(dig(c, f"{probe}.grpc.port") == health,
                    f"{probe} must be a native grpc probe on port {health}")
        else:
            f.check(probe not in c, f"probes disabled: no {probe}")
    f.check(c.get("resources") == (e.v("bbr.resources") or None) or
            (not e.v("bbr.resources") and "resources" not in c), "resources from the values")
    # Security.
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    f.check(psc.get("runAsNonRoot") or csc.get("runAsNonRoot"), "runAsNonRoot must be true")
    f.check(csc.get("runAsUser", psc.get("runAsUser")) not in (None, 0), "a non-zero uid")
    f.check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
    f.check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    f.check("ALL" in dig(csc, "capabilities.drop", []), "capabilities must drop ALL")
    # Volumes and mounts agree.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = c.get("volumeMounts", [])
    for m in mounts:
        f.check(m["name"] in volumes, f"volumeMount {m['name']} has no volume")
        # The spool's emptyDir is the one writable path.
        writable = m["name"] == "spool" and "emptyDir" in volumes.get("spool", {})
        f.check(m.get("readOnly") is True or writable,
                f"volumeMount {m['mountPath']} must be readOnly")
        f.check("subPath" not in m, f"volumeMount {m['mountPath']}: no subPath (never updated)")
    for v in volumes:
        f.check(v in {m["name"] for m in mounts}, f"volume {v} is never mounted")

    def secret_at(path: str) -> str | None:
        for m in mounts:
            if path.startswith(m["mountPath"].rstrip("/") + "/"):
                return dig(volumes.get(m["name"], {}), "secret.secretName")
        return None

    tls_secret = e.v("bbr.tls.secretName") or (
        f"{name}-tls" if e.v("bbr.tls.certManager.issuerRef") else "")
    facts["tls_secret"] = tls_secret
    if tls_secret:
        for key in ("--cert-path", "--key-path"):
            path = own.get(key)
            if f.check(path, f"real certificate: {key} expected"):
                f.check(secret_at(path) == tls_secret,
                        f"{key}={path} must lie in the mounted Secret {tls_secret}")
    else:
        f.check("--cert-path" not in own and "--key-path" not in own and not volumes.get("tls"),
                "default: self-signed certificate, no certificate files or Secret volume")
    f.check(own.get("--secure-serving") in (None, "true"), "TLS must stay on")
    # Adapter maps: API discovery (RBAC, token) or mounted ConfigMaps.
    source = e.v("bbr.adapters.source")
    mounted = set()
    adapters_dir = own.get("--adapters")
    rewrites_dir = own.get("--model-rewrites")
    rewrite_mounts = {}
    for m in mounts:
        cm = dig(volumes.get(m["name"], {}), "configMap.name")
        if cm and m["name"].startswith("model-rewrites-"):
            rewrite_mounts[cm] = m["mountPath"]
            continue
        if cm:
            f.check(adapters_dir and m["mountPath"] == f"{adapters_dir.rstrip('/')}/{cm}",
                    f"ConfigMap {cm} must be mounted at <--adapters>/{cm}")
            mounted.add(cm)
    facts["adapter_configmaps"] = mounted
    rbac = [d for d in docs if d["kind"] in RBAC_KINDS]
    if source == "configMaps":
        f.check(adapters_dir == e.v("bbr.adapters.mountPath"),
                f"--adapters={e.v('bbr.adapters.mountPath')} expected")
        f.check(mounted == set(e.v("bbr.adapters.configMaps")),
                f"mounted adapter ConfigMaps must be {e.v('bbr.adapters.configMaps')}, got {sorted(mounted)}")
    else:
        f.check(not adapters_dir and not mounted, f"adapters from {source}: nothing mounted")
    # Model rewrites: each ConfigMap mounted at <--model-rewrites>/<name>, the
    # chart's own one holding the resources; the sticky header passed.
    want_rewrites = list(e.v("bbr.modelRewrites.configMaps") or [])
    own_cm = f"{name}-model-rewrites"
    rendered_cm = next((d for d in objects(docs, "ConfigMap") if dig(d, "metadata.name") == own_cm), None)
    if e.v("bbr.modelRewrites.resources"):
        want_rewrites.append(own_cm)
        if f.check(rendered_cm, f"ConfigMap {own_cm} with bbr.modelRewrites.resources expected"):
            inside = [d for d in yaml.safe_load_all(rendered_cm["data"].get("rewrites.yaml", "")) if d]
            f.check(inside == e.v("bbr.modelRewrites.resources"),
                    f"{own_cm}: rewrites.yaml must hold exactly bbr.modelRewrites.resources")
    else:
        f.check(rendered_cm is None, f"no ConfigMap {own_cm} without bbr.modelRewrites.resources")
    if want_rewrites:
        f.check(rewrites_dir == e.v("bbr.modelRewrites.mountPath"),
                f"--model-rewrites={e.v('bbr.modelRewrites.mountPath')} expected, got {rewrites_dir!r}")
        want_mounts = {cm: f"{e.v('bbr.modelRewrites.mountPath').rstrip('/')}/{cm}" for cm in want_rewrites}
        f.check(rewrite_mounts == want_mounts,
                f"rewrite ConfigMaps must be mounted {want_mounts}, got {rewrite_mounts}")
    else:
        f.check(not rewrites_dir and not rewrite_mounts, "no model rewrites: nothing mounted, no flag")
    # Disk spool: on by default, into a writable emptyDir at --spool-dir
    # (the root filesystem is read-only); off: --spool-threshold=off.
    spool_mount = next((m for m in mounts if m["name"] == "spool"), None)
    if e.v("bbr.spool.enabled", True):
        f.check(own.get("--spool-threshold") == str(e.v("bbr.spool.threshold", "4MiB")),
                f"--spool-threshold={e.v('bbr.spool.threshold', '4MiB')} expected, got "
                f"{own.get('--spool-threshold')!r}")
        f.check(own.get("--max-spooled-bytes") == str(e.v("bbr.spool.maxSpooledBytes", "4GiB")),
                f"--max-spooled-bytes={e.v('bbr.spool.maxSpooledBytes', '4GiB')} expected")
        dir_ = own.get("--spool-dir")
        f.check(dir_ == e.v("bbr.spool.mountPath", "/var/spool/bbr"),
                f"--spool-dir={e.v('bbr.spool.mountPath')} expected, got {dir_!r}")
        if f.check(spool_mount and spool_mount["mountPath"] == dir_,
                   f"the spool volume must be mounted at --spool-dir ({dir_})"):
            f.check(not spool_mount.get("readOnly"), "the spool mount must be writable")
            empty = volumes.get("spool", {}).get("emptyDir")
            if f.check(isinstance(empty, dict), "the spool volume must be an emptyDir"):
                limit = e.v("bbr.spool.sizeLimit", "5Gi")
                f.check(empty.get("sizeLimit") == (limit or None),
                        f"spool emptyDir sizeLimit {limit!r} expected, got {empty.get('sizeLimit')!r}")
                f.check(empty.get("medium") in (None, ""),
                        "the spool emptyDir must be on disk, not medium: Memory")
    else:
        f.check(own.get("--spool-threshold") == "off", "spool off: --spool-threshold=off expected")
        f.check(spool_mount is None and "spool" not in volumes and "--spool-dir" not in own,
                "spool off: no spool volume, no --spool-dir")
    sticky = e.v("bbr.modelRewrites.stickyHeader")
    f.check(own.get("--model-rewrite-sticky-header") == (sticky if sticky and want_rewrites else None),
            f"--model-rewrite-sticky-header must be {sticky!r} with rewrites, got "
            f"{own.get('--model-rewrite-sticky-header')!r}")
    if source == "kubernetes":
        f.check(pod.get("automountServiceAccountToken") is not False,
                "API discovery needs the ServiceAccount token")
        check_rbac(docs, f, e, sa_name)
    else:
        f.check(not rbac, f"adapters from {source}: no RBAC at all")
        f.check(pod.get("automountServiceAccountToken") is False,
                f"adapters from {source}: no API token in the pod")
    # Service, as upstream: ClusterIP, port -> port, HTTP2.
    f.check(svc["spec"].get("selector") == {"app": name}, f"Service selector must be app: {name}")
    f.check(svc["spec"].get("type", "ClusterIP") == "ClusterIP", "Service type ClusterIP")
    ports = svc["spec"].get("ports", [])
    if f.check(len(ports) == 1, "the Service exposes the ext_proc port only (as upstream)"):
        p = ports[0]
        f.check(p.get("port") == grpc and p.get("targetPort") in (grpc, "grpc")
                and container_port(c, p.get("targetPort")) == grpc,
                f"Service port {grpc} -> container port {grpc}")
        f.check(p.get("appProtocol") == "HTTP2", "Service appProtocol must be HTTP2")
    # PodDisruptionBudget.
    pdbs = objects(docs, "PodDisruptionBudget")
    if e.v("bbr.podDisruptionBudget.enabled"):
        if f.check(len(pdbs) == 1, "one PodDisruptionBudget expected"):
            f.check(selects(dig(pdbs[0], "spec.selector.matchLabels", {}), labels),
                    "the PodDisruptionBudget must select the pods")
            f.check(dig(pdbs[0], "spec.maxUnavailable") == e.v("bbr.podDisruptionBudget.maxUnavailable"),
                    "PodDisruptionBudget maxUnavailable from the values")
    else:
        f.check(not pdbs, "no PodDisruptionBudget unless enabled")
    # cert-manager Certificate.
    certs = objects(docs, "Certificate")
    if e.v("bbr.tls.certManager.issuerRef"):
        if f.check(len(certs) == 1, "one cert-manager Certificate expected"):
            cs = certs[0]["spec"]
            f.check(cs.get("secretName") == tls_secret, f"Certificate secretName must be {tls_secret}")
            f.check(svc_dns(name, ns) in cs.get("dnsNames", []),
                    f"Certificate dnsNames must include {svc_dns(name, ns)}")
            f.check(cs.get("issuerRef") == e.v("bbr.tls.certManager.issuerRef"),
                    "Certificate issuerRef from the values")
            f.check("server auth" in cs.get("usages", []), "Certificate usages must include server auth")
    else:
        f.check(not certs, "no Certificate without bbr.tls.certManager.issuerRef")
    facts["service"] = svc
    return facts


def check_rbac(docs: Docs, f: Failures, e: Expect, sa_name: str) -> None:
    rules_ok = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]
    if e.v("bbr.multiNamespace"):
        f.check(not objects(docs, "Role") and not objects(docs, "RoleBinding"),
                "multiNamespace: no namespaced Role")
        role = one(docs, "ClusterRole", "bbr-configmap-reader", f)
        bindings = objects(docs, "ClusterRoleBinding")
        ref_kind = "ClusterRole"
    else:
        f.check(not objects(docs, "ClusterRole") and not objects(docs, "ClusterRoleBinding"),
                "single namespace: no ClusterRole")
        role = one(docs, "Role", sa_name, f)
        bindings = [one(docs, "RoleBinding", sa_name, f)]
        ref_kind = "Role"
    if role:
        f.check(role.get("rules") == rules_ok, f"{ref_kind} must allow exactly {rules_ok}")
    bindings = [b for b in bindings if b]
    if f.check(len(bindings) == 1, f"one {ref_kind} binding expected"):
        b = bindings[0]
        f.check(b.get("roleRef") == {"apiGroup": "rbac.authorization.k8s.io", "kind": ref_kind,
                                     "name": dig(role or {}, "metadata.name")},
                f"the binding must reference the {ref_kind}")
        f.check(b.get("subjects") == [{"kind": "ServiceAccount", "name": sa_name,
                                       "namespace": e.namespace}],
                f"the binding must name ServiceAccount {e.namespace}/{sa_name}")


def check_none(docs: Docs, f: Failures, e: Expect, facts: dict[str, Any]) -> None:
    provider_kinds = {"GCPRoutingExtension", "HealthCheckPolicy", "EnvoyFilter", "DestinationRule"}
    f.check(not [d for d in docs if d["kind"] in provider_kinds],
            "provider none renders no gateway-specific objects")


def check_gke(docs: Docs, f: Failures, e: Expect, facts: dict[str, Any]) -> None:
    name = e.v("bbr.name")
    ext = one(docs, "GCPRoutingExtension", name, f)
    hcp = one(docs, "HealthCheckPolicy", "bbr-healthcheck", f)
    f.check(not objects(docs, "EnvoyFilter") and not objects(docs, "DestinationRule"),
            "gke renders no Istio objects")
    if ext:
        f.check(ext["spec"].get("targetRefs") == [{"group": "gateway.networking.k8s.io",
                                                   "kind": "Gateway",
                                                   "name": e.v("inferenceGateway.name")}],
                f"GCPRoutingExtension must target Gateway {e.v('inferenceGateway.name')}")
        chains = ext["spec"].get("extensionChains", [])
        f.check([ch.get("name") for ch in chains] == ["chain1"], "one extension chain chain1")
        exts = [x for ch in chains for x in ch.get("extensions", [])]
        f.check([x.get("name") for x in exts] == ["ext1"], "one extension ext1")
        for x in exts:
            f.check(x.get("authority") == "myext.com", "authority myext.com (as upstream)")
            f.check(x.get("requestBodySendMode") == "FullDuplexStreamed",
                    "requestBodySendMode must be FullDuplexStreamed")
            f.check(x.get("supportedEvents") == ["RequestHeaders", "RequestBody", "RequestTrailers"],
                    "supportedEvents RequestHeaders, RequestBody, RequestTrailers only "
                    "(no response events)")
            f.check(x.get("failOpen") is False, "failOpen must be false")
            f.check(x.get("timeout") == e.v("provider.gke.timeout"), "timeout from the values")
            f.check(x.get("backendRef") == {"group": "", "kind": "Service", "name": name,
                                            "port": e.v("bbr.port")},
                    f"backendRef must be Service {name} on {e.v('bbr.port')}")
    if hcp:
        cfg = dig(hcp, "spec.default.config", {})
        f.check(cfg.get("type") == "GRPC", "HealthCheckPolicy must use a GRPC check")
        f.check(cfg.get("grpcHealthCheck") == {"portSpecification": "USE_FIXED_PORT",
                                               "port": e.v("bbr.healthCheckPort")},
                "HealthCheckPolicy must check the fixed gRPC health port")
        f.check(dig(hcp, "spec.default.logConfig.enabled") is True, "logConfig enabled (as upstream)")
        f.check(dig(hcp, "spec.targetRef") == {"group": "", "kind": "Service", "name": name},
                f"HealthCheckPolicy must target Service {name}")


def istio_filter(docs: Docs) -> dict[str, Any] | None:
    efs = objects(docs, "EnvoyFilter")
    try:
        return efs[0]["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]
    except (IndexError, KeyError, TypeError):
        return None


def check_istio(docs: Docs, f: Failures, e: Expect, facts: dict[str, Any], envoy: str | None,
                envoy_files: dict[str, dict[str, Any]] | None = None) -> None:
    name, ns = e.v("bbr.name"), e.namespace
    host = svc_dns(name, ns)
    ef = one(docs, "EnvoyFilter", name, f)
    dr = one(docs, "DestinationRule", name, f)
    f.check(not objects(docs, "GCPRoutingExtension"), "istio renders no GKE objects")
    labels = dig(facts.get("dep", {}), "spec.template.metadata.labels", {})
    f.check(labels.get("sidecar.istio.io/inject") == "false",
            "bbr-extproc pods must not get a sidecar (they terminate TLS themselves)")
    if ef:
        spec = ef["spec"]
        f.check("workloadSelector" not in spec, "scope by targetRefs, not workloadSelector")
        f.check(spec.get("targetRefs") == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "name": e.v("inferenceGateway.name")}],
                f"EnvoyFilter must target Gateway {e.v('inferenceGateway.name')}")
        cps = spec.get("configPatches", [])
        f.check(len(cps) == 1, "one config patch")
        for cp in cps:
            f.check(cp.get("applyTo") == "HTTP_FILTER", "patch must add an HTTP filter")
            f.check(dig(cp, "match.context") == "GATEWAY", "match context must be GATEWAY")
            flt = dig(cp, "match.listener.filterChain.filter", {})
            f.check(flt.get("name") == "envoy.filters.network.http_connection_manager",
                    "the patch must match the http_connection_manager")
            anchor = e.v("provider.istio.envoyFilter.anchorSubFilter")
            f.check(dig(flt, "subFilter.name") == (anchor or None),
                    f"subFilter anchor must be {anchor!r}")
            f.check(dig(cp, "patch.operation") == e.v("provider.istio.envoyFilter.operation"),
                    "patch operation from the values")
            value = dig(cp, "patch.value", {})
            f.check(value.get("name") == "envoy.filters.http.ext_proc.bbr",
                    "filter name envoy.filters.http.ext_proc.bbr (as upstream)")
            tc = value.get("typed_config", {})
            f.check(tc.get("@type", "").endswith("ext_proc.v3.ExternalProcessor"),
                    "the filter must be ext_proc")
            pm = tc.get("processing_mode", {})
            want = {"request_header_mode": "SEND", "request_body_mode": "FULL_DUPLEX_STREAMED",
                    "request_trailer_mode": "SEND", "response_header_mode": "SKIP",
                    "response_body_mode": "NONE", "response_trailer_mode": "SKIP"}
            f.check(pm == want, f"processing_mode must be {want}, got {pm}")
            f.check(tc.get("failure_mode_allow") is False, "failure_mode_allow must be false")
            f.check(tc.get("allow_mode_override") is True, "allow_mode_override must be true")
            x = e.v("provider.istio.extProc")
            f.check(tc.get("message_timeout") == x["messageTimeout"], "message_timeout from the values")
            f.check(tc.get("max_message_timeout") == x["maxMessageTimeout"],
                    "max_message_timeout from the values")
            f.check(dig(tc, "grpc_service.envoy_grpc.max_receive_message_length")
                    == x["maxReceiveMessageLength"], "max_receive_message_length from the values")
            mt = str(tc.get("message_timeout", "0s"))
            f.check(mt.endswith("s") and float(mt.rstrip("ms") or 0) * (0.001 if mt.endswith("ms") else 1) >= 5,
                    f"message_timeout {mt} too short for large bodies (>= 5s)")
            cluster = dig(tc, "grpc_service.envoy_grpc.cluster_name")
            want_cluster = f"outbound|{e.v('bbr.port')}||{host}"
            f.check(cluster == want_cluster, f"cluster_name must be {want_cluster}, got {cluster!r}")
            if envoy and cluster:
                envoy_validate_filter(envoy, value, cluster, f)
            if envoy_files is not None and e.values == Expect(provider="istio").values:
                check_envoy_files(tc, f, None, envoy_files)
    if dr:
        f.check(dr["spec"].get("host") == host, f"DestinationRule host must be {host}")
        tls = dig(dr, "spec.trafficPolicy.tls", {})
        f.check(tls.get("mode") == "SIMPLE", "DestinationRule must originate TLS (SIMPLE)")
        if facts.get("tls_secret"):
            f.check(not tls.get("insecureSkipVerify"), "real certificate: verification must not be skipped")
            if e.v("bbr.tls.caCertificates"):
                f.check(tls.get("caCertificates") == e.v("bbr.tls.caCertificates")
                        and "credentialName" not in tls, "caCertificates from the values")
            else:
                want = e.v("bbr.tls.caSecretName") or facts["tls_secret"]
                f.check(tls.get("credentialName") == want, f"credentialName must be {want}")
            f.check(tls.get("sni") == host, f"SNI must be {host}")
            f.check(tls.get("subjectAltNames") == [host], f"subjectAltNames must be [{host}]")
        else:
            f.check(tls == {"mode": "SIMPLE", "insecureSkipVerify": True},
                    "self-signed certificate: SIMPLE with insecureSkipVerify (as upstream)")


# -------------------------------------------------------------- scenario


def load_yaml_dir(*dirs: Path) -> Docs:
    docs: Docs = []
    for d in dirs:
        for p in sorted(d.glob("*.yaml")):
            docs.extend(x for x in yaml.safe_load_all(p.read_text()) if x)
    return docs


def check_scenario(docs: Docs, f: Failures, routes: str) -> None:
    """routes: 'model' (X-Gateway-Model-Name) or 'base' (X-Gateway-Base-Model-Name)."""
    deployments = {d["metadata"]["name"]: d for d in objects(docs, "Deployment")}
    f.check(set(deployments) == set(SCENARIO),
            f"model server Deployments must be {sorted(SCENARIO)}, got {sorted(deployments)}")
    pool_pods: dict[str, dict[str, str]] = {}
    served: dict[str, set[str]] = {}
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
        f.check(argv_values(args, "--model") == [base], f"{pool}: --model must be {base}")
        f.check(argv_values(args, "--max-loras") == ["2"], f"{pool}: --max-loras must be 2")
        names = []
        for word in argv_values(args, "--lora-modules"):
            try:
                names.append(json.loads(word)["name"])
            except (ValueError, KeyError, TypeError):
                f.check(False, f"{pool}: --lora-modules word {word!r} is not JSON with a name")
        f.check(names == loras, f"{pool}: LoRAs must be {loras}, got {names}")
        f.check(argv_values(args, "--port") == ["8000"], f"{pool}: --port must be 8000")
        f.check(container_port(c, 8000), f"{pool}: containerPort 8000 must be declared")
        served[pool] = {base, *names}
    maps = [c for c in objects(docs, "ConfigMap") if c["metadata"]["name"] != REWRITE_CONFIGMAP]
    f.check(len(maps) == len(SCENARIO), f"one adapter ConfigMap per base model, got {len(maps)}")
    for cm in maps:
        cname = cm["metadata"]["name"]
        f.check(dig(cm, "metadata.labels", {}).get(BBR_MANAGED) == "true",
                f"ConfigMap {cname}: label {BBR_MANAGED}: \"true\" (API discovery)")
        data = cm.get("data", {})
        base = data.get("baseModel", "").strip()
        pools = [p for p, (b, _, _) in SCENARIO.items() if b == base]
        if not f.check(pools, f"ConfigMap {cname}: unknown baseModel {base!r}"):
            continue
        try:
            listed = yaml.safe_load(data.get("adapters", "")) or []
        except yaml.YAMLError as err:
            listed = []
            f.check(False, f"ConfigMap {cname}: adapters is not YAML: {err}")
        f.check(listed == SCENARIO[pools[0]][1],
                f"ConfigMap {cname}: adapters {listed} must equal the pool's LoRAs")
    backends: dict[tuple[str, str], str] = {}
    for svc in objects(docs, "Service"):
        hit = [p for p, lab in pool_pods.items() if selects(svc["spec"].get("selector", {}), lab)]
        if f.check(len(hit) == 1, f"Service {svc['metadata']['name']} must select one pool"):
            backends[("Service", svc["metadata"]["name"])] = hit[0]
            c = deployments[hit[0]]["spec"]["template"]["spec"]["containers"][0]
            for sp in svc["spec"]["ports"]:
                f.check(container_port(c, sp.get("targetPort", sp["port"])) == 8000,
                        f"Service {svc['metadata']['name']} must target the server port")
    for ip in objects(docs, "InferencePool"):
        hit = [p for p, lab in pool_pods.items() if selects(ip["spec"]["selector"]["matchLabels"], lab)]
        if f.check(len(hit) == 1, f"InferencePool {ip['metadata']['name']} must select one pool"):
            backends[("InferencePool", ip["metadata"]["name"])] = hit[0]
            f.check([t["number"] for t in ip["spec"]["targetPorts"]] == [8000],
                    f"InferencePool {ip['metadata']['name']} must target port 8000")
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
                pool = backends.get((kind, b["name"]))
                if f.check(pool, f"{rname}: backendRef {kind}/{b['name']} is not a scenario pool"):
                    pools.add(pool)
                    if kind == "Service":
                        f.check(b.get("port") == 8000, f"{rname}: Service backendRef port must be 8000")
                    else:
                        f.check(b.get("group") == "inference.networking.k8s.io",
                                f"{rname}: {kind} backendRef needs group inference.networking.k8s.io")
            f.check(len(pools) == 1, f"{rname}: each rule must go to exactly one pool")
            f.check(dig(rule, "timeouts.request"), f"{rname}: set a request timeout")
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
    check_scenario_rewrites(docs, f, served, backends)


def check_scenario_rewrites(docs: Docs, f: Failures, served: dict[str, set[str]],
                            backends: dict[tuple[str, str], str]) -> None:
    """The InferenceModelRewrite of rewrites/: the guide's split, each target
    served by the pool it names, the requested name not itself served (it
    would never reach the model server as sent), and one object everywhere:
    the resource, the ConfigMap file bbr-extproc mounts, and the example
    gateway's embedded rule."""
    rewrites = objects(docs, "InferenceModelRewrite")
    if not f.check(len(rewrites) == 1, f"one InferenceModelRewrite, got {len(rewrites)}"):
        return
    obj = rewrites[0]
    spec = obj["spec"]
    pool = spec["poolRef"]["name"]
    f.check(spec["poolRef"].get("kind", "InferencePool") == "InferencePool"
            and pool in SCENARIO, f"rewrite poolRef {pool!r} must be a scenario pool")
    split: dict[str, list[tuple[str, int]]] = {}
    for rule in spec["rules"]:
        targets = [(t["modelRewrite"], t.get("weight", 1)) for t in rule["targets"]]
        for m in rule.get("matches", []):
            f.check(m["model"].get("type", "Exact") == "Exact", "rewrite matches are Exact")
            split[m["model"]["value"]] = targets
    f.check(split == SCENARIO_REWRITES, f"rewrite rules must be {SCENARIO_REWRITES}, got {split}")
    everything = {n for names in served.values() for n in names}
    for requested, targets in split.items():
        f.check(requested not in everything,
                f"rewrite of {requested!r}: a name the pools serve must not be rewritten away")
        for target, _ in targets:
            f.check(target in served.get(pool, set()),
                    f"rewrite target {target!r} is not served by pool {pool}")
    cms = [c for c in objects(docs, "ConfigMap") if c["metadata"]["name"] == REWRITE_CONFIGMAP]
    if f.check(len(cms) == 1, f"ConfigMap {REWRITE_CONFIGMAP} holding the rule for bbr-extproc"):
        data = cms[0].get("data") or {}
        f.check(data and all(k.endswith((".yaml", ".yml")) for k in data),
                f"{REWRITE_CONFIGMAP}: keys must be .yaml files (what --model-rewrites reads)")
        inside = [d for text in data.values() for d in yaml.safe_load_all(text) if d]
        f.check(inside == [obj], f"{REWRITE_CONFIGMAP} must hold exactly the InferenceModelRewrite")
    embedded = [d for d in yaml.safe_load_all(GATEWAY_REWRITES.read_text()) if d]
    f.check(embedded == [obj], f"{GATEWAY_REWRITES.relative_to(REPO)} must be the same object")


def check_binary_accepts(binary: str, docs: Docs, f: Failures) -> None:
    """The real bbr-extproc parses the rendered arguments: with `--help`
    appended, clap parses (and converts) every argument before it and exits
    0, or names the one it rejects and exits 2. Checks done after parsing
    (plugin JSON, certificate files) are the binary's own tests."""
    deps = objects(docs, "Deployment")
    if not deps:
        return
    args = deps[0]["spec"]["template"]["spec"]["containers"][0].get("args", [])
    proc = subprocess.run([binary, *args, "--help"], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    reason = (proc.stderr.strip().splitlines() or ["(no output)"])[0]
    f.check(proc.returncode == 0, f"bbr-extproc rejects the rendered arguments (exit "
                                  f"{proc.returncode}): {reason}")


# ---------------------------------------------------------------- targets


class Target:
    """One rendering: how it is made and what it must hold."""

    def __init__(self, name: str, make: Callable[[], Docs], check: Callable[[Docs, Failures], None]):
        self.name, self.make, self.check = name, make, check


def chart_target(helm: Helm, envoy: str | None, name: str, provider: str = "none",
                 namespace: str | None = None, sets: dict[str, Any] | None = None,
                 values_file: Path | None = None, args: list[str] | None = None,
                 envoy_files: dict[str, dict[str, Any]] | None = None) -> Target:
    """A `helm template` rendering with --set-json per value (types kept)."""
    values: dict[str, Any] = {}
    cli = list(args) if args is not None else []
    if args is None:
        if provider != "none":
            cli += ["--set", f"provider.name={provider}"]
        if namespace:
            cli += ["--namespace", namespace]
        if values_file:
            cli += ["-f", str(values_file)]
            values = merge(values, yaml.safe_load(values_file.read_text()))
        for k, v in (sets or {}).items():
            cli += ["--set-json", f"{k}={json.dumps(v)}"]
            node = values
            parts = k.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = v
    expect = Expect(namespace or "default", provider, values)

    def check(docs: Docs, f: Failures) -> None:
        facts = check_bbr(docs, f, expect)
        {"none": check_none, "gke": check_gke}.get(provider, lambda *a: None)(docs, f, expect, facts)
        if provider == "istio":
            check_istio(docs, f, expect, facts, envoy, envoy_files)

    t = Target(name, lambda: helm.template(cli), check)
    t.cli = cli  # type: ignore[attr-defined]
    return t


def targets(helm: Helm, envoy: str | None, scenario_values: Path) -> list[Target]:
    envoy_files = load_envoy_files()
    issuer = {"name": "bbr-ca", "kind": "Issuer", "group": "cert-manager.io"}
    out = [
        # The guide's three commands, with exactly their arguments.
        chart_target(helm, envoy, "guide: helm install body-based-router", args=[]),
        chart_target(helm, envoy, "guide: ... --set provider.name=gke", "gke",
                     args=["--set", "provider.name=gke"]),
        chart_target(helm, envoy, "guide: ... --set provider.name=istio", "istio",
                     args=["--set", "provider.name=istio"], envoy_files=envoy_files),
        chart_target(helm, envoy, "gke in namespace llm", "gke", namespace="llm"),
        chart_target(helm, envoy, "istio in namespace llm", "istio", namespace="llm"),
        chart_target(helm, envoy, "istio + tls.secretName", "istio",
                     sets={"bbr.tls.secretName": "bbr-serving-cert"}),
        chart_target(helm, envoy, "istio + tls.secretName + caCertificates", "istio",
                     sets={"bbr.tls.secretName": "bbr-serving-cert",
                           "bbr.tls.caCertificates": "/etc/bbr-ca/ca.crt"}),
        chart_target(helm, envoy, "istio + cert-manager issuerRef", "istio",
                     sets={"bbr.tls.certManager.issuerRef": issuer}),
        chart_target(helm, envoy, "gke + cert-manager issuerRef + caSecretName", "gke",
                     sets={"bbr.tls.certManager.issuerRef": issuer,
                           "bbr.tls.caSecretName": "bbr-ca"}),
        chart_target(helm, envoy, "multiNamespace (ClusterRole)", "none",
                     sets={"bbr.multiNamespace": True}),
        chart_target(helm, envoy, "tracing enabled", "gke",
                     sets={"bbr.tracing.enabled": True,
                           "bbr.tracing.otelExporterEndpoint": "http://otel-collector:4317"}),
        chart_target(helm, envoy, "plugins and flags (upstream style)", "none",
                     sets={"bbr.plugins": [
                         {"type": "body-field-to-header", "name": "prompt-extractor",
                          "json": '{"fieldName":"prompt","headerName":"X-Foo"}'}],
                         "bbr.flags": {"v": 5, "zap-encoder": "json", "zap-devel": True,
                                       "metrics-endpoint-auth": False}}),
        chart_target(helm, envoy, "extras: limits, policies, replicas, PDB", "istio",
                     sets={"bbr.replicas": 3, "bbr.podDisruptionBudget.enabled": True,
                           "bbr.limits.maxModelLen": 512, "bbr.limits.maxDepth": 64,
                           "bbr.limits.maxScanBytes": 67108864,
                           "bbr.limits.maxBodyBytes": 268435456,
                           "bbr.duplicateKeys": "first-wins", "bbr.missingModel": "reject",
                           "bbr.extraArgs": ["--drain-delay=10s"],
                           "provider.istio.envoyFilter.operation": "INSERT_BEFORE",
                           "provider.istio.envoyFilter.anchorSubFilter":
                               "envoy.filters.http.ext_proc"}),
        chart_target(helm, envoy, "extras: probes off, no resources", "none",
                     sets={"bbr.probes.enabled": False, "bbr.resources": {}}),
        chart_target(helm, envoy, "adapters mounted (scenario values)", "istio",
                     values_file=scenario_values),
        chart_target(helm, envoy, "adapters none", "gke", sets={"bbr.adapters.source": "none"}),
        chart_target(helm, envoy, "spool off", "none", sets={"bbr.spool.enabled": False}),
        chart_target(helm, envoy, "spool: threshold, cap, dir, no sizeLimit", "gke",
                     sets={"bbr.spool.threshold": "1MiB", "bbr.spool.maxSpooledBytes": "20GiB",
                           "bbr.spool.mountPath": "/spool", "bbr.spool.sizeLimit": ""}),
        chart_target(helm, envoy, "model rewrites: ConfigMaps, resources, sticky", "istio",
                     sets={"bbr.modelRewrites.configMaps": ["llm-rollouts"],
                           "bbr.modelRewrites.stickyHeader": "x-session-id",
                           "bbr.modelRewrites.resources": REWRITE_RESOURCES}),
    ]
    models = SCENARIO_DIR / "models"
    routes = SCENARIO_DIR / "routes"
    rewrites = SCENARIO_DIR / "rewrites"
    out += [
        Target("scenario by-model", lambda: load_yaml_dir(models, routes / "by-model", rewrites),
               lambda d, f: check_scenario(d, f, "model")),
        Target("scenario by-base-model",
               lambda: load_yaml_dir(models, routes / "by-base-model", rewrites),
               lambda d, f: check_scenario(d, f, "base")),
        Target("scenario inferencepool",
               lambda: load_yaml_dir(models, routes / "inferencepool", rewrites),
               lambda d, f: check_scenario(d, f, "model")),
    ]
    return out


# The guide's food-review rollout and an alias, as chart values.
REWRITE_RESOURCES = [
    {"apiVersion": "inference.networking.x-k8s.io/v1alpha2", "kind": "InferenceModelRewrite",
     "metadata": {"name": "food-review-rollout"},
     "spec": {"poolRef": {"name": "vllm-llama3-8b-instruct"},
              "rules": [{"matches": [{"model": {"type": "Exact", "value": "food-review"}}],
                         "targets": [{"modelRewrite": "food-review-1", "weight": 90},
                                     {"modelRewrite": "food-review-2", "weight": 10}]}]}},
    {"apiVersion": "inference.networking.x-k8s.io/v1alpha2", "kind": "InferenceModelRewrite",
     "metadata": {"name": "gpt-alias"},
     "spec": {"poolRef": {"name": "vllm-llama3-8b-instruct"},
              "rules": [{"matches": [{"model": {"value": "gpt-4o"}}],
                         "targets": [{"modelRewrite": "meta-llama/Llama-3.1-8B-Instruct"}]}]}},
]

# Values that cannot work must stop `helm template` with a message naming the key.
REFUSED = [
    (["--set", "bbr.modelRewrites.stickyHeader=x session"], "bbr.modelRewrites.stickyHeader"),
    (["--set", "provider.name=aws"], "provider.name"),
    (["--set", "bbr.spool.threshold=4096"], "bbr.spool.threshold"),
    (["--set", "bbr.spool.maxSpooledBytes=lots"], "bbr.spool.maxSpooledBytes"),
    (["--set", "bbr.adapters.source=configMaps"], "bbr.adapters.configMaps"),
    (["--set", "bbr.adapters.source=etcd"], "bbr.adapters.source"),
    (["--set", "bbr.duplicateKeys=newest"], "bbr.duplicateKeys"),
    (["--set", "bbr.missingModel=drop"], "bbr.missingModel"),
    (["--set", "bbr.tls.caSecretName=a", "--set", "bbr.tls.caCertificates=/b"], "bbr.tls.caSecretName"),
]


def embedded_manifests(docs: Docs) -> Docs:
    """The objects inside rendered ConfigMaps' YAML keys (the InferenceModelRewrite
    files bbr-extproc reads), so the real CRD checks them like any object."""
    out: Docs = []
    for cm in objects(docs, "ConfigMap"):
        for key, text in (cm.get("data") or {}).items():
            if key.endswith((".yaml", ".yml")):
                out += [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind")]
    return out


def check_docs(t: Target, docs: Docs, crds: CrdSchemas, versions: list[str]) -> Failures:
    f = Failures(t.name)
    check_schemas(docs, f, crds, versions)
    check_schemas(embedded_manifests(docs), f, crds, versions)
    try:
        t.check(docs, f)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as err:
        f.check(False, f"malformed object ({type(err).__name__}: {err})")
    return f


# -------------------------------------------------------------- self-test


def _k(docs: Docs, kind: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind)


def _c(docs: Docs) -> dict[str, Any]:
    return _k(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def _tc(docs: Docs) -> dict[str, Any]:
    return _k(docs, "EnvoyFilter")["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]


def _ext(docs: Docs) -> dict[str, Any]:
    return _k(docs, "GCPRoutingExtension")["spec"]["extensionChains"][0]["extensions"][0]


GUIDE, GKE, ISTIO = ("guide: helm install body-based-router", "guide: ... --set provider.name=gke",
                     "guide: ... --set provider.name=istio")

# (target, what is broken, mutation of the rendered objects). Each must fail.
BREAKAGES: list[tuple[str, str, Callable[[Docs], None]]] = [
    (GUIDE, "unknown field in a core object (strict schema)",
     lambda d: _c(d).update(imagePullPolice="Always")),
    (GUIDE, "wrong type in a core object", lambda d: _c(d)["ports"][0].update(containerPort="9004")),
    (GUIDE, "unknown core kind",
     lambda d: d.append({"apiVersion": "v1", "kind": "Gizmo", "metadata": {"name": "x"}})),
    (GUIDE, "container renamed", lambda d: _c(d).update(name="bbr-extproc")),
    (GUIDE, "--streaming dropped", lambda d: _c(d)["args"].remove("--streaming")),
    (GUIDE, "a default plugin dropped",
     lambda d: _c(d).update(args=[a for a in _c(d)["args"] if not a.startswith("base-model")])),
    (GUIDE, "ServiceAccount named like the Deployment",
     lambda d: _k(d, "Deployment")["spec"]["template"]["spec"].update(
         serviceAccountName="body-based-router")),
    (GUIDE, "selector label changed",
     lambda d: _k(d, "Deployment")["spec"]["selector"]["matchLabels"].update(app="bbr")),
    (GUIDE, "Service without appProtocol HTTP2",
     lambda d: _k(d, "Service")["spec"]["ports"][0].pop("appProtocol")),
    (GUIDE, "Role lost the watch verb",
     lambda d: _k(d, "Role")["rules"][0].update(verbs=["get", "list"])),
    (GUIDE, "env NAMESPACE dropped", lambda d: _c(d).pop("env")),
    (GUIDE, "readiness probe dropped", lambda d: _c(d).pop("readinessProbe")),
    (GUIDE, "liveness probe on the ext_proc port",
     lambda d: _c(d)["livenessProbe"]["grpc"].update(port=9004)),
    (GUIDE, "rolling update may take a ready pod away",
     lambda d: _k(d, "Deployment")["spec"]["strategy"]["rollingUpdate"].update(maxUnavailable=1)),
    (GUIDE, "root filesystem writable",
     lambda d: _c(d)["securityContext"].update(readOnlyRootFilesystem=False)),
    (GUIDE, "a Secret shipped",
     lambda d: d.append({"apiVersion": "v1", "kind": "Secret",
                         "metadata": {"name": "x", "namespace": "default",
                                      "labels": {"app": "body-based-router"}}})),
    (GUIDE, "first install waits for a Secret (TLS volume in the default)",
     lambda d: (_c(d).update(volumeMounts=[{"name": "tls", "mountPath": "/etc/bbr/tls",
                                            "readOnly": True}]),
                _k(d, "Deployment")["spec"]["template"]["spec"].update(
                    volumes=[{"name": "tls", "secret": {"secretName": "bbr-tls"}}]))),
    (GKE, "typo in a GCPRoutingExtension field (real CRD schema)",
     lambda d: _ext(d).update(requestBodySendmode="FullDuplexStreamed")),
    (GKE, "bad enum in a GCPRoutingExtension (real CRD schema)",
     lambda d: _ext(d).update(supportedEvents=["RequestHeaders", "RequestBodies"])),
    (GKE, "response events sent to the extension",
     lambda d: _ext(d).update(supportedEvents=["RequestHeaders", "RequestBody", "RequestTrailers",
                                               "ResponseHeaders"])),
    (GKE, "backendRef to another Service", lambda d: _ext(d)["backendRef"].update(name="bbr")),
    (GKE, "health check on the ext_proc port",
     lambda d: _k(d, "HealthCheckPolicy")["spec"]["default"]["config"]["grpcHealthCheck"]
     .update(port=9004)),
    (GKE, "HealthCheckPolicy check type misspelt (real CRD schema)",
     lambda d: _k(d, "HealthCheckPolicy")["spec"]["default"]["config"].update(type="GRPCS")),
    (ISTIO, "filter not scoped to the Gateway", lambda d: _k(d, "EnvoyFilter")["spec"].pop("targetRefs")),
    (ISTIO, "EnvoyFilter applyTo misspelt (real CRD schema)",
     lambda d: _k(d, "EnvoyFilter")["spec"]["configPatches"][0].update(applyTo="HTTP_FILTERS")),
    (ISTIO, "response bodies held (SSE)",
     lambda d: _tc(d)["processing_mode"].update(response_body_mode="FULL_DUPLEX_STREAMED")),
    (ISTIO, "Envoy rejects the filter (unknown field)",
     lambda d: _tc(d).update(message_timeout_ms=10)),
    (ISTIO, "Envoy rejects the filter (bad duration)",
     lambda d: _tc(d).update(message_timeout="ten seconds")),
    (ISTIO, "fail open", lambda d: _tc(d).update(failure_mode_allow=True)),
    (ISTIO, "cluster name in the wrong namespace",
     lambda d: _tc(d)["grpc_service"]["envoy_grpc"].update(
         cluster_name="outbound|9004||body-based-router.other.svc.cluster.local")),
    (ISTIO, "chart's message timeout drifts from deploy/envoy",
     lambda d: _tc(d).update(message_timeout="11s")),
    (ISTIO, "DestinationRule TLS mode misspelt (real CRD schema)",
     lambda d: _k(d, "DestinationRule")["spec"]["trafficPolicy"]["tls"].update(mode="SIMPEL")),
    ("istio + tls.secretName", "real certificate not verified",
     lambda d: _k(d, "DestinationRule")["spec"]["trafficPolicy"]["tls"].update(insecureSkipVerify=True)),
    ("istio + tls.secretName", "certificate path outside the mounted Secret",
     lambda d: _c(d).update(args=[a.replace("/etc/bbr/tls/", "/tmp/") for a in _c(d)["args"]])),
    ("istio + cert-manager issuerRef", "Certificate for the wrong host",
     lambda d: _k(d, "Certificate")["spec"].update(dnsNames=["bbr.example.com"])),
    ("multiNamespace (ClusterRole)", "ClusterRole renamed",
     lambda d: (_k(d, "ClusterRole")["metadata"].update(name="bbr-reader"),
                _k(d, "ClusterRoleBinding")["roleRef"].update(name="bbr-reader"))),
    ("tracing enabled", "OTLP endpoint env lost",
     lambda d: _c(d).update(env=[x for x in _c(d)["env"]
                                 if x["name"] != "OTEL_EXPORTER_OTLP_ENDPOINT"])),
    ("extras: limits, policies, replicas, PDB", "PodDisruptionBudget selects nothing",
     lambda d: _k(d, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].update(app="x")),
    ("extras: limits, policies, replicas, PDB", "a limit not passed",
     lambda d: _c(d).update(args=[a for a in _c(d)["args"] if not a.startswith("--max-scan")])),
    ("adapters mounted (scenario values)", "an adapter ConfigMap not mounted",
     lambda d: (_c(d).update(volumeMounts=_c(d)["volumeMounts"][:1]),
                _k(d, "Deployment")["spec"]["template"]["spec"].update(
                    volumes=_k(d, "Deployment")["spec"]["template"]["spec"]["volumes"][:1]))),
    ("adapters mounted (scenario values)", "RBAC kept without API use",
     lambda d: d.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                         "metadata": {"name": "x", "namespace": "default",
                                      "labels": {"app": "body-based-router"}}, "rules": []})),
    ("model rewrites: ConfigMaps, resources, sticky", "a rewrite ConfigMap not mounted",
     lambda d: _c(d).update(volumeMounts=[m for m in _c(d)["volumeMounts"]
                                          if m["name"] != "model-rewrites-0"])),
    ("model rewrites: ConfigMaps, resources, sticky", "sticky header flag lost",
     lambda d: _c(d).update(args=[a for a in _c(d)["args"]
                                  if not a.startswith("--model-rewrite-sticky-header")])),
    ("model rewrites: ConfigMaps, resources, sticky", "a rewrite weight out of range (real CRD schema)",
     lambda d: next(c for c in d if c["kind"] == "ConfigMap")["data"].update(
         {"rewrites.yaml": yaml.safe_dump({**REWRITE_RESOURCES[0], "spec": {
             **REWRITE_RESOURCES[0]["spec"], "rules": [{"targets": [
                 {"modelRewrite": "food-review-1", "weight": 2000000}]}]}})})),
    ("scenario by-model", "a LoRA routed to the wrong pool",
     lambda d: next(r for r in d if r["kind"] == "HTTPRoute"
                    and r["metadata"]["name"] == "llm-llama-route")["spec"]["rules"][0]["matches"]
     [1]["headers"][0].update(value="ski-resorts")),
    ("scenario by-model", "adapter map out of step with the simulator",
     lambda d: next(c for c in d if c["kind"] == "ConfigMap"
                    and "deepseek" in c["metadata"]["name"])["data"].update(adapters="- ski-resorts\n")),
    ("scenario by-model", "adapter map not discoverable (label lost)",
     lambda d: next(c for c in d if c["kind"] == "ConfigMap")["metadata"]["labels"].pop(BBR_MANAGED)),
    ("scenario by-model", "HTTPRoute header match type misspelt (real CRD schema)",
     lambda d: next(r for r in d if r["kind"] == "HTTPRoute")["spec"]["rules"][0]["matches"][0]
     ["headers"][0].update(type="exact")),
    ("scenario by-model", "a rewrite target no pool serves",
     lambda d: _k(d, "InferenceModelRewrite")["spec"]["rules"][0]["targets"][1].update(
         modelRewrite="food-review-3")),
    ("scenario by-model", "the rewrite file bbr-extproc mounts out of step with the object",
     lambda d: next(c for c in d if c["kind"] == "ConfigMap"
                    and c["metadata"]["name"] == REWRITE_CONFIGMAP)["data"].update(
         {"food-review.yaml": yaml.safe_dump({**_k(d, "InferenceModelRewrite"), "spec": {
             **_k(d, "InferenceModelRewrite")["spec"], "rules": [{"targets": [
                 {"modelRewrite": "food-review-1"}]}]}})})),
    ("scenario by-base-model", "a rewrite weight out of range (real CRD schema)",
     lambda d: _k(d, "InferenceModelRewrite")["spec"]["rules"][0]["targets"][0].update(
         weight=2000000)),
    ("scenario inferencepool", "InferencePool selecting no pool",
     lambda d: _k(d, "InferencePool")["spec"]["selector"]["matchLabels"].update(app="nope")),
    ("scenario inferencepool", "InferencePool unknown field (real CRD schema)",
     lambda d: _k(d, "InferencePool")["spec"].update(targetPort=8000)),
]


# Breakages only the CRDs' CEL rules catch: each must fail with "CEL rule fails".
CEL_BREAKAGES: list[tuple[str, str, Callable[[Docs], None]]] = [
    (GKE, "callout timeout over GKE's 10 s maximum",
     lambda d: _ext(d).update(timeout="30s")),
    (GKE, "health check timeout longer than its interval",
     lambda d: _k(d, "HealthCheckPolicy")["spec"]["default"].update(checkIntervalSec=1, timeoutSec=5)),
    ("scenario inferencepool", "an InferencePool target port listed twice",
     lambda d: _k(d, "InferencePool")["spec"].update(targetPorts=[{"number": 8000}, {"number": 8000}])),
    (ISTIO, "EnvoyFilter with both targetRefs and workloadSelector",
     lambda d: _k(d, "EnvoyFilter")["spec"].update(workloadSelector={"labels": {"app": "x"}})),
]


def chart_breakages() -> list[tuple[str, Callable[[Path], None], str]]:
    """Breakages of the chart's source (a copy), rendered again with Helm."""

    def edit(rel: str, old: str, new: str) -> Callable[[Path], None]:
        def apply(chart: Path) -> None:
            p = chart / rel
            text = p.read_text()
            if old not in text:
                raise RuntimeError(f"self-test: {old!r} not in {rel}")
            p.write_text(text.replace(old, new, 1))
        return apply

    return [
        ("template: --tracing flag lost", edit("templates/deployment.yaml",
                                                "- --tracing={{ $b.tracing.enabled }}", ""), GUIDE),
        ("template: spool emptyDir in memory",
         edit("templates/deployment.yaml", "emptyDir: {{ if $b.spool.sizeLimit }}{ sizeLimit",
              "emptyDir: {{ if $b.spool.sizeLimit }}{ medium: Memory, sizeLimit"), GUIDE),
        ("template: spool dir not mounted",
         edit("templates/deployment.yaml", "              mountPath: {{ $b.spool.mountPath }}\n",
              "              mountPath: /tmp\n"), GUIDE),
        ("template: Service appProtocol changed",
         edit("templates/service.yaml", "appProtocol: HTTP2", "appProtocol: kubernetes.io/h2c"), GUIDE),
        ("template: DestinationRule never verifies",
         edit("templates/istio.yaml", "{{- if $tlsSecret }}\n      # Real", "{{- if false }}\n      # Real"),
         "istio + tls.secretName"),
        ("values: upstream key multiNamespace removed",
         edit("values.yaml", "  multiNamespace: false\n", ""), GUIDE),
        ("values: upstream default replicas changed",
         edit("values.yaml", "  replicas: 1\n", "  replicas: 2\n"), GUIDE),
        ("values: message timeout drifts from deploy/envoy",
         edit("values.yaml", "messageTimeout: 10s", "messageTimeout: 5s"), ISTIO),
    ]


def envoy_file_breakages() -> list[tuple[str, Callable[[dict[str, dict[str, Any]]], None]]]:
    def tc(files: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
        found = envoy_file_ext_proc(files[name])
        assert found is not None
        return found
    return [
        ("deploy/envoy/bbr-full-duplex.yaml: message_timeout drifts",
         lambda fs: tc(fs, "bbr-full-duplex.yaml").update(message_timeout="30s")),
        ("deploy/envoy/bbr-full-duplex-tls.yaml: responses sent to the processor",
         lambda fs: tc(fs, "bbr-full-duplex-tls.yaml")["processing_mode"].update(
             response_header_mode="SEND")),
        ("deploy/envoy/bbr-streamed.yaml: fails open",
         lambda fs: tc(fs, "bbr-streamed.yaml").update(failure_mode_allow=True)),
        ("deploy/envoy/bbr-base-model.yaml: message limit dropped",
         lambda fs: tc(fs, "bbr-base-model.yaml")["grpc_service"]["envoy_grpc"].pop(
             "max_receive_message_length")),
    ]


# ------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--helm", required=True)
    ap.add_argument("--envoy", required=True, help="Envoy binary (EnvoyFilter, deploy/envoy)")
    ap.add_argument("--crds", default=str(REPO.parent / "shared" / "crds"),
                    help="directory of real CRDs (default: ../shared/crds beside the repository)")
    ap.add_argument("--bbr-extproc", help="bbr-extproc binary: every rendering's container "
                    "arguments must parse (run with --help appended)")
    ap.add_argument("--kubernetes-version", action="append", dest="versions")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--out", help="also write each rendering here (for inspection)")
    a = ap.parse_args()
    versions = a.versions or DEFAULT_K8S_VERSIONS
    crd_dir = Path(a.crds)
    if not crd_dir.is_dir():
        print(f"FAIL the CRD directory {crd_dir} does not exist (shared/crds beside the repository)")
        return 1
    crds = CrdSchemas(crd_dir)
    helm = Helm(a.helm)
    passed = failed = 0

    def report(name: str, f: Failures, ok_text: str) -> None:
        nonlocal passed, failed
        if f.items:
            failed += 1
            print(f"FAIL {name}")
            for item in f.items:
                print(f"     - {item}")
        else:
            passed += 1
            print(f"ok   {name}: {ok_text}")

    try:
        print(f"{helm.version()}; Envoy {a.envoy}; CRDs from {crd_dir}")
        # helm lint, per provider.
        for p in ("none", "gke", "istio"):
            proc = helm.run(["lint", "--strict", str(CHART), "--set", f"provider.name={p}"])
            f = Failures("lint")
            f.check(proc.returncode == 0, f"helm lint --strict: {(proc.stdout + proc.stderr).strip()}")
            report(f"helm lint --strict (provider {p})", f, "clean")
        f = Failures("values")
        check_values_file(f)
        report("values.yaml: every upstream key with its default", f,
               f"{len(UPSTREAM_VALUES) + len(UPSTREAM_KEYS_OURS)} keys")
        for args, key in REFUSED:
            proc = helm.run(["template", RELEASE, str(CHART), *args])
            f = Failures("refused")
            f.check(proc.returncode != 0 and key in proc.stderr,
                    f"helm template {' '.join(args)} must fail naming {key}; "
                    f"rc={proc.returncode} {proc.stderr.strip()[:200]}")
            report(f"refused: {' '.join(args)}", f, "stops with a message naming " + key)
        scenario_values = SCENARIO_DIR / "values-mounted-adapters.yaml"
        rendered: dict[str, tuple[Target, Docs]] = {}
        for t in targets(helm, a.envoy, scenario_values):
            try:
                docs = t.make()
            except RuntimeError as err:
                print(f"FAIL {t.name}: {err}")
                failed += 1
                continue
            rendered[t.name] = (t, docs)
            if a.out:
                Path(a.out).mkdir(parents=True, exist_ok=True)
                safe = re.sub(r"[^A-Za-z0-9.-]+", "_", t.name)
                (Path(a.out) / f"{safe}.yaml").write_text(yaml.safe_dump_all(docs))
            f = check_docs(t, docs, crds, versions)
            if a.bbr_extproc and hasattr(t, "cli"):
                check_binary_accepts(a.bbr_extproc, docs, f)
            report(t.name, f, f"{len(docs)} objects ({', '.join(sorted({d['kind'] for d in docs}))})")
        # deploy/envoy: loaded by Envoy, ext_proc equal to the chart's.
        f = Failures("envoy files")
        chart_tc = istio_filter(rendered[ISTIO][1]) if ISTIO in rendered else None
        if f.check(chart_tc, "no EnvoyFilter rendered for istio"):
            check_envoy_files(chart_tc, f, a.envoy)
        report("deploy/envoy: ext_proc filters equal the chart's; Envoy loads every file", f,
               f"{len(FULL_DUPLEX_ENVOY_FILES) + len(OTHER_MODE_ENVOY_FILES)} filters compared")
        if a.self_test:
            for name, what, mutate in BREAKAGES:
                if name not in rendered:
                    print(f"FAIL self-test {name}: not rendered")
                    failed += 1
                    continue
                t, docs = rendered[name]
                broken = copy.deepcopy(docs)
                mutate(broken)
                f = check_docs(t, broken, crds, versions)
                if name == ISTIO:
                    tc = istio_filter(broken)
                    if tc:
                        check_envoy_files(tc, f, None)
                caught = bool(f.items)
                passed += caught
                failed += not caught
                print(f"ok   self-test {name}: caught {what}: {f.items[0][:110]}" if caught
                      else f"FAIL self-test {name}: NOT caught: {what}")
            for name, what, mutate in CEL_BREAKAGES:
                t, docs = rendered[name]
                broken = copy.deepcopy(docs)
                mutate(broken)
                f = check_docs(t, broken, crds, versions)
                cel = [i for i in f.items if "CEL rule fails" in i]
                caught = bool(cel) or celpy is None
                passed += caught
                failed += not caught
                print(f"ok   self-test CEL {name}: caught {what}: {cel[0][:110] if cel else 'cel-python missing'}"
                      if caught else f"FAIL self-test CEL {name}: NOT caught by a CEL rule: {what} "
                                     f"(other findings: {f.items[:2]})")
            if a.bbr_extproc:
                broken = copy.deepcopy(rendered[GUIDE][1])
                _c(broken)["args"].append("--no-such-flag=1")
                f = Failures("binary")
                check_binary_accepts(a.bbr_extproc, broken, f)
                passed += bool(f.items)
                failed += not f.items
                print(f"ok   self-test binary: caught an argument bbr-extproc does not know: {f.items[0][:110]}"
                      if f.items else "FAIL self-test binary: NOT caught: an unknown argument")
            for what, apply, target_name in chart_breakages():
                with tempfile.TemporaryDirectory(prefix="bbr-chart-broken-") as tmp:
                    chart = Path(tmp) / "body-based-routing"
                    shutil.copytree(CHART, chart)
                    apply(chart)
                    f = Failures(what)
                    check_values_file(f, chart / "values.yaml")
                    t = rendered[target_name][0]
                    try:
                        docs = helm.template(t.cli, chart)  # type: ignore[attr-defined]
                        f.items += check_docs(t, docs, crds, versions).items
                        tc = istio_filter(docs)
                        if tc and t.name == ISTIO:
                            check_envoy_files(tc, f, None)
                    except RuntimeError as err:
                        f.check(False, str(err))
                caught = bool(f.items)
                passed += caught
                failed += not caught
                print(f"ok   self-test chart: caught {what}: {f.items[0][:110]}" if caught
                      else f"FAIL self-test chart: NOT caught: {what}")
            for what, mutate in envoy_file_breakages():
                files = load_envoy_files()
                mutate(files)
                f = Failures(what)
                if chart_tc:
                    check_envoy_files(chart_tc, f, None, files)
                caught = bool(f.items)
                passed += caught
                failed += not caught
                print(f"ok   self-test envoy: caught {what}: {f.items[0][:110]}" if caught
                      else f"FAIL self-test envoy: NOT caught: {what}")
    finally:
        helm.close()
    print(f"\nKubernetes versions (core kinds, strict): {', '.join(versions)}")
    print(f"Rendered arguments parsed by bbr-extproc: {a.bbr_extproc or 'not checked (no --bbr-extproc)'}")
    print(f"CRD kinds (real openAPIV3Schema, unknown fields rejected): {', '.join(sorted(crds.kinds()))}")
    if celpy is None:
        print(f"Not checked: the {crds.cel_rules} CEL rules of those CRDs (cel-python missing)")
    else:
        print(f"CEL rules (x-kubernetes-validations) evaluated on rendered objects: "
              f"{crds.cel.evaluated}; skipped, cel-python cannot run them: {len(crds.cel.skipped)}")
        for rule, why in sorted(crds.cel.skipped.items()):
            print(f"     - skipped ({why}): {rule[:100]}")
    print("Not checked against a schema: cert-manager's Certificate (no CRD here; content "
          "checked by meaning)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
