"""A stand-in for ``kubectl`` talking to a Kubernetes API server with KubeRay installed.

No API server can run on the test machines, so this program plays one: it keeps the
cluster's objects in a JSON state file ($STANDIN_KUBECTL_STATE), records every call
(argv and stdin) in $STANDIN_KUBECTL_LOG, and answers the commands our scripts use with
output shaped like real kubectl's: ``apply -f -``, ``get ... -o json|yaml``, ``delete``,
``port-forward``. It is a test double, named as such, and never used outside tests.
"""

import json
import os
import socket
import sys
import time

import yaml

STATE = os.environ["STANDIN_KUBECTL_STATE"]
LOG = os.environ["STANDIN_KUBECTL_LOG"]


def load():
    with open(STATE) as handle:
        return json.load(handle)


def save(state):
    with open(STATE, "w") as handle:
        json.dump(state, handle, indent=1)


def fail(message, code=1):
    sys.stderr.write(message + "\n")
    sys.exit(code)


def parse(argv):
    """Split global flags (--context, --namespace/-n, -l, -o, -f) from the verb and its words."""
    flags, words = {}, []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in ("--context", "--namespace", "-n", "-l", "--selector", "-o", "--output", "-f", "--filename"):
            flags[{"-n": "--namespace", "--selector": "-l", "--output": "-o", "--filename": "-f"}.get(arg, arg)] = argv[
                index + 1
            ]
            index += 2
        else:
            words.append(arg)
            index += 1
    return flags, words


def matches(labels, selector):
    if not selector:
        return True
    for requirement in selector.split(","):
        key, _, value = requirement.partition("=")
        if labels.get(key) != value:
            return False
    return True


def as_list(items):
    return {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}


def raycluster_object(stored):
    obj = json.loads(json.dumps(stored["manifest"]))
    obj["metadata"].update(
        {
            "uid": stored["uid"],
            "generation": stored["generation"],
            "resourceVersion": str(stored["generation"] * 100),
            "creationTimestamp": "2026-11-26T08:00:00Z",
        }
    )
    obj["status"] = stored.get("status", {"state": "ready"})
    return obj


def pod_object(stored):
    pod = {key: value for key, value in stored.items() if key != "standin"}
    pending = stored.get("standin", {}).get("pending_polls", 0)
    if pending > 0:
        pod["status"] = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}
    return pod


def main(argv):
    stdin = "" if sys.stdin.isatty() else sys.stdin.read()
    with open(LOG, "a") as log:
        log.write(json.dumps({"argv": argv, "stdin": stdin}) + "\n")
    state = load()
    if state.get("unreachable"):
        fail("The connection to the server 10.0.0.1:443 was refused - did you specify the right host or port?")
    flags, words = parse(argv)
    namespace = flags.get("--namespace", "default")
    verb, rest = words[0], words[1:]

    if verb == "apply":
        if flags.get("-f") != "-":
            fail("error: must specify -f -")
        if state.get("apply_error"):
            fail(state["apply_error"])
        for document in yaml.safe_load_all(stdin):
            if not document:
                continue
            name = document["metadata"]["name"]
            if document.get("apiVersion") == "v1" and document.get("kind") == "Secret":
                secrets = state.setdefault("secrets", {})
                action = "configured" if f"{namespace}/{name}" in secrets else "created"
                secrets[f"{namespace}/{name}"] = {"data": document["data"], "labels": document["metadata"]["labels"]}
                print(f"secret/{name} {action}")
                continue
            if document.get("apiVersion") != "ray.io/v1" or document.get("kind") != "RayCluster":
                fail(f'error: resource mapping not found for kind "{document.get("kind")}"')
            key = f"{namespace}/{name}"
            clusters = state.setdefault("rayclusters", {})
            if key in clusters:
                clusters[key]["manifest"] = document
                clusters[key]["generation"] += 1
                print(f"raycluster.ray.io/{name} configured")
            else:
                clusters[key] = {"manifest": document, "uid": f"uid-{len(clusters)}", "generation": 1}
                print(f"raycluster.ray.io/{name} created")
        save(state)
        return

    if verb == "get":
        kind = rest[0]
        if kind in ("crd", "customresourcedefinition") and rest[1:] == ["rayclusters.ray.io"]:
            if not state.get("crd_file"):
                fail(
                    "Error from server (NotFound): customresourcedefinitions.apiextensions.k8s.io "
                    '"rayclusters.ray.io" not found'
                )
            with open(state["crd_file"]) as handle:
                sys.stdout.write(handle.read())
            return
        if kind in ("rayclusters.ray.io", "rayclusters", "raycluster"):
            items = [
                raycluster_object(stored)
                for key, stored in sorted(state.get("rayclusters", {}).items())
                if key.split("/")[0] == namespace
                and matches(stored["manifest"]["metadata"].get("labels", {}), flags.get("-l"))
            ]
        elif kind in ("secret", "secrets") and rest[1:]:
            key = f"{namespace}/{rest[1]}"
            if key not in state.get("secrets", {}):
                fail(f'Error from server (NotFound): secrets "{rest[1]}" not found')
            stored = state["secrets"][key]
            secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": stored["data"]}
            secret["metadata"] = {"name": rest[1], "namespace": namespace, "labels": stored.get("labels", {})}
            json.dump(secret, sys.stdout, indent=4)
            return
        elif kind in ("pods", "pod"):
            items = []
            for stored in state.get("pods", []):
                if stored["metadata"]["namespace"] == namespace and matches(
                    stored["metadata"]["labels"], flags.get("-l")
                ):
                    items.append(pod_object(stored))
                    if stored.get("standin", {}).get("pending_polls", 0) > 0:
                        stored["standin"]["pending_polls"] -= 1
            save(state)
        else:
            fail(f'error: the server doesn\'t have a resource type "{kind}"')
        if flags.get("-o") != "json":
            fail("stand-in kubectl: only -o json is served for lists")
        json.dump(as_list(items), sys.stdout, indent=4)
        sys.stdout.write("\n")
        return

    if verb == "delete":
        kind, names = rest[0], rest[1:]
        if kind in ("secret", "secrets"):
            for name in names:
                if state.get("secrets", {}).pop(f"{namespace}/{name}", None) is None:
                    fail(f'Error from server (NotFound): secrets "{name}" not found')
                print(f'secret "{name}" deleted')
            save(state)
            return
        clusters = state.get("rayclusters", {})
        for name in names:
            if f"{namespace}/{name}" not in clusters:
                fail(f'Error from server (NotFound): rayclusters.ray.io "{name}" not found')
        for name in names:
            del clusters[f"{namespace}/{name}"]
            print(f'raycluster.ray.io "{name}" deleted')
        save(state)
        return

    if verb == "port-forward":
        target, ports = rest[0], rest[1]
        cluster = target.removeprefix("svc/").removesuffix("-head-svc")
        if f"{namespace}/{cluster}" not in state.get("rayclusters", {}):
            fail(f'Error from server (NotFound): services "{target.removeprefix("svc/")}" not found')
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            local = probe.getsockname()[1]
        remote = ports.split(":")[-1]
        print(f"Forwarding from 127.0.0.1:{local} -> {remote}", flush=True)
        print(f"Forwarding from [::1]:{local} -> {remote}", flush=True)
        time.sleep(3600)
        return

    fail(f'error: unknown command "{verb}" for "kubectl"')


if __name__ == "__main__":
    main(sys.argv[1:])
