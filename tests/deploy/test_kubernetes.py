"""
deploy/kubernetes: Warden nodes as a StatefulSet sharing PostgreSQL and Redis.
The manifests are validated against the Kubernetes schemas (kubernetes-validate
--strict), scanned by checkov, and cross-checked against Warden itself: the
configuration parses, each pod gets its own node_id, the container's command
line and preStop drain parse with Warden's option parsers, and the probes,
Services and policies name the ports the configuration opens.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from twisted.scripts._twistd_unix import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

import warden
from tests.deploy.test_container import CONTAINERFILE, exec_form, instructions
from tests.deploy.tools import (
    DEPLOY,
    assert_checkov_clean,
    checkov,
    drain_running_warden,
    require_module,
    require_tool,
)
from tests.integration.harness import IntegrationTestCase
from warden.config import WardenConfig, parse_config_text
from warden.ctl.main import build_parser

KUBERNETES = DEPLOY / "kubernetes"
LABELS = {"app.kubernetes.io/name": "warden"}
EXAMPLE_SECRET = "secret.example.yaml"


def manifests(testcase: SynchronousTestCase) -> dict[str, list[dict[str, Any]]]:
    """Every YAML file's documents, by file name."""
    yaml = require_module(testcase, "yaml", "PyYAML")
    return {
        path.name: [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        for path in sorted(KUBERNETES.glob("*.yaml"))
    }


def resources(testcase: SynchronousTestCase) -> dict[tuple[str, str], dict[str, Any]]:
    """The Kubernetes resources (not the kustomization), by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name, documents in manifests(testcase).items():
        for document in documents:
            if document["kind"] != "Kustomization":
                key = (document["kind"], document["metadata"]["name"])
                testcase.assertNotIn(key, found, name)
                found[key] = document
    return found


class ManifestTests(SynchronousTestCase):
    """The manifests fit Warden and each other."""

    def setUp(self) -> None:
        self.resources = resources(self)
        self.statefulset = self.resources[("StatefulSet", "warden")]
        self.pod = self.statefulset["spec"]["template"]["spec"]
        (self.init,) = self.pod["initContainers"]
        (self.warden,) = self.pod["containers"]
        template = self.resources[("ConfigMap", "warden-config")]["data"]["warden.toml"]
        self.template: str = template

    def render(self, pod_name: str, pod_ip: str) -> WardenConfig:
        """The configuration as the init container's command renders it for one pod."""
        script = self.init["command"][-1]
        result = subprocess.run(
            ["sh", "-c", script.replace("/etc/warden/template/warden.toml", "-")
             .replace("/run/warden/warden.toml", "/dev/stdout")],
            input=self.template, capture_output=True, text=True, timeout=30, check=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "POD_NAME": pod_name,
                 "POD_IP": pod_ip},
        )  # fmt: skip
        self.assertNotIn("@", result.stdout.replace("postgresql://warden@", ""))
        return parse_config_text(result.stdout, "configmap.yaml")

    def test_every_pod_gets_its_own_node(self) -> None:
        """
        The rendered configuration parses; node_id is the pod's name and the cluster,
        media and metrics addresses its own, from the downward API.
        """
        env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in self.init["env"]}
        self.assertEqual(env, {"POD_NAME": "metadata.name", "POD_IP": "status.podIP"})
        configs = [self.render(f"warden-{i}", f"10.0.0.{i + 10}") for i in range(2)]
        self.assertEqual([c.node_id for c in configs], ["warden-0", "warden-1"])
        first = configs[0]
        self.assertEqual(first.cluster.address, "10.0.0.10")
        self.assertEqual(first.media.address, "10.0.0.10")
        self.assertEqual(first.admin.metrics_listen, "tcp:9360:interface=10.0.0.10")
        self.assertTrue(first.store.url.startswith("postgresql://"))
        self.assertTrue(first.state.url.startswith("redis"))

    def test_several_nodes_spread(self) -> None:
        """Two or more replicas, never two on one Kubernetes node, on the host network."""
        self.assertGreaterEqual(self.statefulset["spec"]["replicas"], 2)
        self.assertEqual(self.statefulset["spec"]["selector"]["matchLabels"], LABELS)
        self.assertEqual(self.statefulset["spec"]["template"]["metadata"]["labels"], LABELS)
        (rule,) = self.pod["affinity"]["podAntiAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        self.assertEqual(rule["topologyKey"], "kubernetes.io/hostname")
        self.assertEqual(rule["labelSelector"]["matchLabels"], LABELS)
        self.assertIs(self.pod["hostNetwork"], True)
        self.assertEqual(self.pod["dnsPolicy"], "ClusterFirstWithHostNet")

    def test_command_line_parses(self) -> None:
        """The image's entry point plus the container's args is a valid twistd warden."""
        final = instructions(CONTAINERFILE.read_text(encoding="utf-8"))
        entry = exec_form([r for w, r in final if w == "ENTRYPOINT"][-1])
        argv = entry + self.warden["args"]
        config_path = argv[argv.index("--config") + 1]
        self.assertEqual(config_path, "/run/warden/warden.toml")
        scratch = Path(self.mktemp())
        scratch.write_text("[sip]\nport = 0\n[admin]\nenabled = false\n", encoding="utf-8")
        data_dir = argv[argv.index("--data-dir") + 1]
        replaced = {config_path: str(scratch), data_dir: self.mktemp()}
        options = ServerOptions()
        options.parseOptions([replaced.get(a, a) for a in argv[1:]])
        self.assertEqual(options.subCommand, "warden")
        mounts = {m["mountPath"]: m["name"] for m in self.warden["volumeMounts"]}
        self.assertEqual(mounts[data_dir], "data")
        self.assertEqual(self.render("warden-0", "10.0.0.1").server.data_dir, data_dir)
        self.assertEqual(mounts[str(Path(config_path).parent)], "config")

    def test_image_is_this_version(self) -> None:
        """Both containers run the image of this checkout's version (the Containerfile's)."""
        for container in (self.init, self.warden):
            self.assertEqual(container["image"].rsplit(":", 1)[1], warden.__version__)

    def test_runs_as_the_image_user(self) -> None:
        """Non-root as the image's uid, read-only root, no capabilities, no API token."""
        final = instructions(CONTAINERFILE.read_text(encoding="utf-8"))
        uid, gid = [r for w, r in final if w == "USER"][-1].split(":")
        context = self.pod["securityContext"]
        self.assertEqual((context["runAsUser"], context["runAsGroup"]), (int(uid), int(gid)))
        self.assertIs(context["runAsNonRoot"], True)
        for container in (self.init, self.warden):
            own = container["securityContext"]
            self.assertIs(own["readOnlyRootFilesystem"], True)
            self.assertIs(own["allowPrivilegeEscalation"], False)
            self.assertEqual(own["capabilities"]["drop"], ["ALL"])
            self.assertNotIn("add", own["capabilities"])
        self.assertIs(self.pod["automountServiceAccountToken"], False)

    def test_probes_and_drain(self) -> None:
        """
        Readiness on /readyz and liveness on /healthz at the metrics listener's port;
        preStop is wardenctl drain --wait with the pod's configuration and the
        secret's token, within a grace period longer than the drain timeout.
        """
        config = self.render("warden-0", "10.0.0.1")
        port = int(config.admin.metrics_listen.split(":")[1])
        ports = {p["name"]: p["containerPort"] for p in self.warden["ports"]}
        self.assertEqual(ports["metrics"], port)
        self.assertEqual(self.warden["readinessProbe"]["httpGet"]["path"], "/readyz")
        self.assertEqual(self.warden["livenessProbe"]["httpGet"]["path"], "/healthz")
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            self.assertEqual(self.warden[probe]["httpGet"]["port"], "metrics")
        argv = self.warden["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(argv[0], "/opt/warden/bin/wardenctl")
        args = build_parser().parse_args(argv[1:])
        self.assertEqual((args.area, args.wait), ("drain", True))
        self.assertEqual(args.config, self.warden["args"][1])
        secrets = {m["mountPath"] for m in self.warden["volumeMounts"] if m["name"] == "secrets"}
        self.assertEqual({str(Path(args.token_file).parent)}, secrets)
        self.assertEqual({str(Path(config.store.password_file).parent)}, secrets)
        grace = self.pod["terminationGracePeriodSeconds"]
        self.assertGreater(grace, config.admin.drain_timeout + 15)

    def test_services_reach_the_sip_port(self) -> None:
        """SIP Services on UDP and TCP at the configured port, keeping the phone's address."""
        config = self.render("warden-0", "10.0.0.1")
        seen = set()
        for (kind, name), item in self.resources.items():
            if kind != "Service":
                continue
            self.assertEqual(item["spec"]["selector"], LABELS, name)
            for port in item["spec"]["ports"]:
                if port["name"].startswith("sip-"):
                    self.assertEqual(port["port"], config.sip.port)
                    seen.add((name, port["protocol"]))
            if item["spec"].get("type") == "LoadBalancer":
                self.assertEqual(item["spec"]["externalTrafficPolicy"], "Local")
        self.assertLessEqual({("warden-sip-udp", "UDP"), ("warden-sip-tcp", "TCP")}, seen)
        self.assertEqual(self.statefulset["spec"]["serviceName"], "warden-nodes")
        self.assertIn(("Service", "warden-nodes"), self.resources)

    def test_network_policy_opens_the_configured_ports(self) -> None:
        """Ingress admits SIP on both transports and exactly the media port range."""
        config = self.render("warden-0", "10.0.0.1")
        policy = self.resources[("NetworkPolicy", "warden")]["spec"]
        self.assertEqual(policy["podSelector"]["matchLabels"], LABELS)
        opened = {
            (p["protocol"], p["port"], p.get("endPort", p["port"]))
            for rule in policy["ingress"]
            for p in rule["ports"]
        }
        sip = config.sip.port
        self.assertLessEqual(
            {("UDP", sip, sip), ("TCP", sip, sip),
             ("UDP", config.media.port_min, config.media.port_max)},
            opened,
        )  # fmt: skip

    def test_disruption_budget_and_monitor(self) -> None:
        """One node at a time may be disrupted; the ServiceMonitor scrapes the metrics port."""
        budget = self.resources[("PodDisruptionBudget", "warden")]["spec"]
        self.assertEqual(budget["selector"]["matchLabels"], LABELS)
        self.assertLess(budget["maxUnavailable"], self.statefulset["spec"]["replicas"])
        monitor = self.resources[("ServiceMonitor", "warden")]["spec"]
        (endpoint,) = monitor["endpoints"]
        matches = [
            item
            for (kind, _), item in self.resources.items()
            if kind == "Service"
            and monitor["selector"]["matchLabels"].items() <= item["metadata"]["labels"].items()
        ]
        self.assertEqual([m["metadata"]["name"] for m in matches], ["warden-metrics"])
        self.assertIn(endpoint["port"], [p["name"] for p in matches[0]["spec"]["ports"]])
        self.assertEqual(endpoint["path"], "/metrics")

    def test_no_secret_committed(self) -> None:
        """The only Secret is the example, whose values are empty and which is not applied."""
        secrets = [name for kind, name in self.resources if kind == "Secret"]
        self.assertEqual(secrets, ["warden-credentials"])
        (example,) = manifests(self)[EXAMPLE_SECRET]
        self.assertEqual(set(example["stringData"].values()), {""})
        self.assertNotIn("data", example)
        self.assertNotIn("password =", self.template)

    def test_kustomization_applies_everything_else(self) -> None:
        """kustomization.yaml lists every manifest but the example Secret."""
        files = manifests(self)
        (kustomization,) = files["kustomization.yaml"]
        expected = set(files) - {"kustomization.yaml", EXAMPLE_SECRET}
        self.assertEqual(set(kustomization["resources"]), expected)


class ValidatorTests(SynchronousTestCase):
    """The Kubernetes schemas and checkov accept the manifests."""

    def test_kubernetes_validate_strict(self) -> None:
        """
        kubernetes-validate --strict passes every manifest with a Kubernetes schema
        (no unknown field); only the kustomization and the Prometheus Operator's
        ServiceMonitor, which have none, are left to ManifestTests.
        """
        program = require_tool(self, "kubernetes-validate", "kubernetes-validate")
        files = sorted(
            str(p)
            for p in KUBERNETES.glob("*.yaml")
            if p.name not in ("kustomization.yaml", "servicemonitor.yaml")
        )
        result = subprocess.run(
            [program, "--strict", *files],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        passed = [line for line in result.stdout.splitlines() if " passed for resource " in line]
        self.assertEqual(len(passed), len(resources(self)) - 1, result.stdout)
        self.assertNotIn("WARN", result.stdout + result.stderr)

    def test_checkov(self) -> None:
        """checkov finds no failed check; each skip in the manifests gives its reason."""
        report = checkov(self, KUBERNETES, "kubernetes")
        assert_checkov_clean(self, report)
        skips = {
            value.split("=", 1)[0]
            for item in resources(self).values()
            for key, value in item["metadata"].get("annotations", {}).items()
            if key.startswith("checkov.io/skip")
        }
        skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
        self.assertEqual(skipped, skips)


class PreStopDrainTests(IntegrationTestCase):
    """The StatefulSet's preStop hook against a real Warden."""

    async def test_pre_stop_drains(self) -> None:
        """The preStop command (the Secret's token file, the pod's config) drains a Warden."""
        (warden,) = resources(self)[("StatefulSet", "warden")]["spec"]["template"]["spec"][
            "containers"
        ]
        await drain_running_warden(self, warden["lifecycle"]["preStop"]["exec"]["command"])
