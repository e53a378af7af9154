"""Checks the Helm chart helm/executor with the real Helm engine
(helm-python-sdk: Helm's Go SDK as a C library, no helm binary) and
kubernetes-validate, for tests/tests/helm.rs.

    chart.py check CHART KEDA_CRDS BAD_VALUES_DIR
        lints and renders the chart with each values file of CHART/ci/,
        validates every manifest (kubernetes-validate --strict for 1.30 and
        the newest version it knows; KEDA's kinds against their CRDs in
        KEDA_CRDS), checks the invariants of every render, and checks that
        each file of BAD_VALUES_DIR (over ci/default-values.yaml) is refused
        with a message naming the value its `# expect:` line gives.
    chart.py render CHART VALUES_JSON
        prints the manifests rendered with those values (over nothing but
        the chart's defaults) as one JSON list.
    chart.py validate FILE...
        validates the Kubernetes manifests of each file like the rendered
        ones: the examples' (a Jenkinsfile's podTemplate; Tekton's and
        Argo's kinds, which no schema here knows, as Pods of their
        containers).
    chart.py commands DIR
        prints every `executor` command line of the examples in DIR as
        JSON [[example, argv]], CI placeholders replaced by `example`.

Exits 1 naming every failure (file, document, path in it).
"""

import copy
import hashlib
import json
import os
import re
import shlex
import sys

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv

RELEASE, NAMESPACE = "ci", "ci"
OLDEST = "1.30.0"
KEDA_FILES = {
    "ScaledJob": "keda.sh_scaledjobs.yaml",
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
}
# Kinds of the Prometheus operator: no schema of theirs is at hand, so
# they are only checked for what the chart puts in them (below).
PROMETHEUS_KINDS = {"ServiceMonitor", "PodMonitor"}

failures = []


def fail(where, message):
    failures.append("%s: %s" % (where, message))


def merge(base, over):
    """Helm's merge of two values files: maps deeply, the rest replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f) or {}


def render(chart_dir, values):
    """{template: [documents]} of one render."""
    with helm.Chart.load(chart_dir) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        merged = chart.merge_values(values)
    docs = {}
    for template, text in manifests.items():
        if template.endswith("NOTES.txt"):
            continue
        docs[template] = [d for d in yaml.safe_load_all(text) if d]
    return docs, merged, manifests


def strict_crd_schema(schema):
    """A CRD's openAPIV3Schema as JSON Schema refusing unknown fields, as
    the API server's pruning would drop them (except where the CRD keeps
    unknown fields)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return
        if node.get("type") == "object" and "properties" in node \
                and not node.get("x-kubernetes-preserve-unknown-fields") \
                and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for child in node.get(key, {}).values():
                walk(child)
        for key in ("items", "additionalProperties", "not"):
            walk(node.get(key))
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key, []):
                walk(child)

    walk(schema)
    schema.setdefault("properties", {})
    for key in ("apiVersion", "kind"):
        schema["properties"].setdefault(key, {"type": "string"})
    schema["properties"].setdefault("metadata", {"type": "object"})
    return schema


def keda_validators(crd_dir):
    validators = {}
    for kind, name in KEDA_FILES.items():
        crd = load_yaml(os.path.join(crd_dir, name))
        for version in crd["spec"]["versions"]:
            schema = strict_crd_schema(version["schema"]["openAPIV3Schema"])
            api = "%s/%s" % (crd["spec"]["group"], version["name"])
            validators[(api, kind)] = jsonschema.Draft7Validator(schema)
    return validators


def validate_doc(where, doc, keda):
    kind, api = doc.get("kind"), doc.get("apiVersion")
    if (api, kind) in keda:
        for error in keda[(api, kind)].iter_errors(doc):
            fail(where, "KEDA %s schema: at /%s: %s"
                 % (kind, "/".join(map(str, error.absolute_path)), error.message))
        return
    if kind in PROMETHEUS_KINDS:
        if api != "monitoring.coreos.com/v1":
            fail(where, "%s has apiVersion %s" % (kind, api))
        return
    for version in (OLDEST, kv.latest_version() + ".0"):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(where, "Kubernetes %s (strict): at /%s: %s"
                 % (version, "/".join(map(str, e.absolute_path)), e.message))
        except kv.SchemaNotFoundError as e:
            fail(where, "Kubernetes %s: %s" % (version, e))


def pod_specs(doc):
    """(name, pod spec) of a workload."""
    kind, spec = doc.get("kind"), doc.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [spec["template"]["spec"]]
    if kind == "ScaledJob":
        return [spec["jobTargetRef"]["template"]["spec"]]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if kind == "Pod":
        return [spec]
    return []


def find_key(node, key, path=""):
    """Every (path, value) of `key` anywhere in `node`."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            here = "%s/%s" % (path, k)
            if k == key:
                found.append((here, v))
            found += find_key(v, key, here)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += find_key(v, key, "%s/%d" % (path, i))
    return found


def flag(args, name):
    if name in args and args.index(name) + 1 < len(args):
        return args[args.index(name) + 1]
    return None


def check_invariants(where, docs, values, texts):
    everything = [d for ds in docs.values() for d in ds]
    grace = int(values["longestJobTimeoutSeconds"])
    for doc in everything:
        at = "%s %s/%s" % (where, doc.get("kind"), doc.get("metadata", {}).get("name"))
        for path, value in find_key(doc, "privileged"):
            if value:
                fail(at, "%s is true" % path)
        for path, _ in find_key(doc, "hostPath"):
            fail(at, "%s: a hostPath volume" % path)
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            for path, value in find_key(doc, key):
                if value:
                    fail(at, "%s: a host namespace" % path)
        if doc.get("kind") in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"):
            fail(at, "the chart binds Kubernetes API rights")
        if doc.get("kind") == "ServiceAccount" and doc.get("automountServiceAccountToken") is not False:
            fail(at, "automountServiceAccountToken is not false")
        for spec in pod_specs(doc):
            if spec.get("automountServiceAccountToken") is not False:
                fail(at, "the pod mounts a service account token")
            pod_grace = spec.get("terminationGracePeriodSeconds", 30)
            if pod_grace < grace:
                fail(at, "terminationGracePeriodSeconds %s < longestJobTimeoutSeconds %s"
                     % (pod_grace, grace))
            for volume in spec.get("volumes", []):
                if "emptyDir" in volume and "sizeLimit" not in volume["emptyDir"]:
                    fail(at, "emptyDir %s has no sizeLimit" % volume["name"])
            for container in spec["containers"]:
                args = container.get("args", [])
                runner_grace = flag(args, "--grace")
                if args[:1] == ["runner"] and (runner_grace is None or int(runner_grace) < grace):
                    fail(at, "runner --grace %s < longestJobTimeoutSeconds %s"
                         % (runner_grace, grace))
                if runner_grace is not None and int(runner_grace) > pod_grace:
                    fail(at, "runner --grace %s > terminationGracePeriodSeconds %s"
                         % (runner_grace, pod_grace))
                if args[:1] == ["serve"]:
                    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                        got = container.get(probe, {}).get("httpGet", {}).get("path")
                        if got != path:
                            fail(at, "%s of %s is %r, not %s" % (probe, container["name"], got, path))
                    checksum = doc["spec"]["template"]["metadata"].get("annotations", {}).get("checksum/config")
                    config = [t for name, t in texts.items() if name.endswith("/configmap.yaml")]
                    if not config or checksum != hashlib.sha256(config[0].encode()).hexdigest():
                        fail(at, "checksum/config is not the ConfigMap's sha256")
                if values["isolation"] == "in-place":
                    sc = container.get("securityContext", {})
                    if sc.get("allowPrivilegeEscalation") is not False:
                        fail(at, "in-place: allowPrivilegeEscalation is not false")
                    if sc.get("capabilities", {}).get("add"):
                        fail(at, "in-place: capabilities added")
                    if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                        fail(at, "in-place: seccomp is not RuntimeDefault")
                else:
                    if spec.get("hostUsers") is not False:
                        fail(at, "namespace isolation: hostUsers is not false")
        if doc.get("kind") == "ConfigMap" and "executor.toml" in doc.get("data", {}):
            import tomllib
            config = tomllib.loads(doc["data"]["executor.toml"])
            if config["queue"]["grace_seconds"] < grace:
                fail(at, "[queue] grace_seconds < longestJobTimeoutSeconds")
    replicas = int(values["server"]["replicas"])
    pdbs = [d for d in everything if d.get("kind") == "PodDisruptionBudget"]
    if replicas > 1 and not pdbs:
        fail(where, "%d server replicas and no PodDisruptionBudget" % replicas)
    if replicas == 1 and pdbs:
        fail(where, "a PodDisruptionBudget for one replica blocks node drains")
    servers = [d for d in everything if d.get("kind") == "Deployment"
               and d["metadata"]["name"].endswith("-server")]
    if len(servers) != 1:
        fail(where, "expected one server Deployment, got %d" % len(servers))


def check(chart_dir, crd_dir, bad_dir):
    keda = keda_validators(crd_dir)
    ci_dir = os.path.join(chart_dir, "ci")
    matrix = sorted(f for f in os.listdir(ci_dir) if f.endswith("-values.yaml"))
    for name in matrix:
        where = "ci/" + name
        values = load_yaml(os.path.join(ci_dir, name))
        for version in ("v" + OLDEST, "v" + kv.latest_version() + ".0"):
            report = helm.lint(chart_dir, values, strict=True, kube_version=version)
            for message in report.get("messages", []):
                if message.get("severity", 0) >= 2:
                    fail(where, "helm lint (%s): %s %s" % (version, message.get("path"), message.get("error")))
            for error in report.get("errors", []):
                fail(where, "helm lint (%s): %s" % (version, error))
        try:
            docs, merged, texts = render(chart_dir, values)
        except helm.HelmError as e:
            fail(where, "render: %s" % e)
            continue
        count = 0
        for template, documents in docs.items():
            for doc in documents:
                count += 1
                validate_doc("%s %s %s/%s" % (where, template, doc.get("kind"),
                                              doc.get("metadata", {}).get("name")), doc, keda)
        check_invariants(where, docs, merged, texts)
        print("ok %s: %d manifests (%s)" % (where, count, ", ".join(sorted(
            {d["kind"] for ds in docs.values() for d in ds}))))
    base = load_yaml(os.path.join(ci_dir, "default-values.yaml"))
    bad = sorted(f for f in os.listdir(bad_dir) if f.endswith(".yaml"))
    for name in bad:
        path = os.path.join(bad_dir, name)
        with open(path) as f:
            first = f.readline()
        if not first.startswith("# expect: "):
            fail(path, "no `# expect: VALUE` first line")
            continue
        expect = first[len("# expect: "):].strip()
        values = merge(base, load_yaml(path))
        try:
            render(chart_dir, values)
        except helm.HelmError as e:
            message = str(e)
            if expect not in message:
                fail(path, "refused, but the message does not name %s: %s" % (expect, message))
            else:
                print("ok %s refused: %s" % (name, " ".join(message.split())[:300]))
            continue
        fail(path, "accepted (expected a refusal naming %s)" % expect)
    print("%d values files rendered and validated, %d bad values files refused"
          % (len(matrix), len(bad)))


def as_pod(name, containers, volumes):
    """A Pod holding `containers`: how the container specs of kinds no
    schema is at hand for (Tekton steps, Argo templates) are validated."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": containers, "volumes": volumes or []}}


def pods_of(path, doc):
    """The documents to validate for `doc`: itself for Kubernetes' kinds,
    Pods of its containers for Tekton's Task and Argo's WorkflowTemplate."""
    api = doc.get("apiVersion", "")
    if api.startswith("tekton.dev/"):
        return [as_pod("tekton-task", [dict(s) for s in doc["spec"]["steps"]], [])]
    if api.startswith("argoproj.io/"):
        volumes = doc["spec"].get("volumes", [])
        return [as_pod("argo-" + t["name"], [dict(t["container"], name="main")], volumes)
                for t in doc["spec"]["templates"] if "container" in t]
    return [doc]


JENKINS_POD = re.compile(r"podTemplate\(yaml: '''\n(.*?)'''\)", re.S)


def manifests(path):
    """The Kubernetes manifests of an example: its YAML documents, or a
    Jenkinsfile's podTemplate."""
    with open(path) as f:
        text = f.read()
    if os.path.basename(path) == "Jenkinsfile":
        return [yaml.safe_load(m) for m in JENKINS_POD.findall(text)]
    return [d for d in yaml.safe_load_all(text) if d]


def validate_files(files):
    for path in files:
        docs = manifests(path)
        if not docs:
            fail(path, "no Kubernetes manifest")
        count = 0
        for i, doc in enumerate(docs):
            for pod in pods_of(path, doc):
                count += 1
                validate_doc("%s document %d (%s)" % (path, i + 1, pod.get("kind")), pod, {})
        print("ok %s: %d manifests" % (path, count))


# A CI system's placeholders: GitHub's ${{ }}, Argo's {{ }}, Tekton's
# $(params.x), shell variables. Each becomes `example`.
PLACEHOLDER = re.compile(r"\$\{\{[^}]*\}\}|\{\{[^}]*\}\}|\$\([^)]*\)|\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*")


def shell_commands(script):
    """`/kaniko/executor ...` command lines of a shell script."""
    joined = re.sub(r"\\\n", " ", script)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("/kaniko/executor"):
            found.append(shlex.split(PLACEHOLDER.sub("example", line)))
    return found


def commands(directory):
    """[(example, argv)] of every executor command line in `directory`."""
    found = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        with open(path) as f:
            text = f.read()
        if name == "Jenkinsfile":
            for script in re.findall(r"sh '''(.*?)'''", text, re.S):
                found += [(name, argv) for argv in shell_commands(script)]
        elif name == ".gitlab-ci.yml":
            for job in yaml.safe_load(text).values():
                for line in job.get("script", []) if isinstance(job, dict) else []:
                    found += [(name, argv) for argv in shell_commands(line)]
        elif name == "github-actions.yml":
            for job in yaml.safe_load(text)["jobs"].values():
                for step in job["steps"]:
                    found += [(name, argv) for argv in shell_commands(step.get("run", ""))]
        elif name.endswith(".yaml"):
            for doc in manifests(path):
                for pod in pods_of(path, doc):
                    for spec in pod_specs(pod):
                        for c in spec["containers"]:
                            if "/executor:" in c.get("image", "") and "args" in c:
                                argv = c.get("command", ["/kaniko/executor"]) + c["args"]
                                found.append((name, [PLACEHOLDER.sub("example", a) for a in argv]))
    return found


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "check" and len(sys.argv) == 5:
        check(*sys.argv[2:5])
    elif command == "render" and len(sys.argv) == 4:
        docs, _, _ = render(sys.argv[2], json.loads(sys.argv[3]))
        json.dump([d for ds in docs.values() for d in ds], sys.stdout)
    elif command == "validate" and len(sys.argv) > 2:
        validate_files(sys.argv[2:])
    elif command == "commands" and len(sys.argv) == 3:
        json.dump(commands(sys.argv[2]), sys.stdout)
    else:
        sys.exit(__doc__)
    if failures:
        for failure in failures:
            print("FAIL " + failure, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
