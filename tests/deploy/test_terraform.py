"""
deploy/terraform/aws, checked offline (no terraform binary, no AWS): every .tf
parses with python-hcl2, every var./local./module./data./resource reference is
defined, checkov passes with a written reason for each skip, the size presets
stay within the Auto Scaling bounds, and the instances' boot script renders to
valid shell whose Warden configuration Warden's own parser accepts.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

import warden
from tests.deploy.tools import DEPLOY, REPO, assert_checkov_clean, checkov, require_module
from warden.config import parse_config_text

AWS = DEPLOY / "terraform" / "aws"
TEMPLATE = AWS / "user-data.sh.tftpl"
PROVIDERS = ("aws", "random")
REFERENCE = re.compile(
    r"(?<![\w./-])(?:(var|local|module)\.([A-Za-z_][\w-]*)"
    r"|data\.([A-Za-z_][\w-]*)\.([A-Za-z_][\w-]*)"
    r"|((?:" + "|".join(PROVIDERS) + r")_[a-z0-9_]+)\.([A-Za-z_][\w-]*))"
)


def _name(key: str) -> str:
    """A block label or attribute name without the quotes newer python-hcl2 keeps."""
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key


def _clean(value: Any) -> Any:
    """Parsed HCL with labels unquoted and the parser's bookkeeping keys dropped."""
    if isinstance(value, dict):
        return {_name(k): _clean(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def parse(testcase: SynchronousTestCase, text: str) -> dict[str, Any]:
    """One .tf document, parsed by python-hcl2."""
    hcl2 = require_module(testcase, "hcl2", "python-hcl2")
    result: dict[str, Any] = _clean(hcl2.loads(text))
    return result


def module(testcase: SynchronousTestCase) -> dict[str, list[dict[str, Any]]]:
    """Every block of every .tf file, merged by block type."""
    merged: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(AWS.glob("*.tf")):
        for kind, blocks in parse(testcase, path.read_text(encoding="utf-8")).items():
            merged.setdefault(kind, []).extend(blocks)
    return merged


def _labelled(blocks: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """resource/data blocks by (type, name)."""
    return {
        (kind, name): body
        for block in blocks
        for kind, named in block.items()
        for name, body in named.items()
    }


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _interpolations(text: str) -> Iterator[str]:
    """The ``${...}`` expressions of a string (nested ones inside their parent)."""
    start = text.find("${")
    while start != -1:
        depth, end = 0, start + 1
        while end < len(text):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                break
            end += 1
        yield text[start + 2 : end]
        start = text.find("${", end)


def references(tree: dict[str, list[dict[str, Any]]]) -> set[str]:
    """Every reference made anywhere in ``tree``, as ``kind.name`` strings."""
    found: set[str] = set()
    for text in _strings(tree):
        for expression in _interpolations(text):
            for m in REFERENCE.finditer(expression):
                if m.group(1):
                    found.add(f"{m.group(1)}.{m.group(2)}")
                elif m.group(3):
                    found.add(f"data.{m.group(3)}.{m.group(4)}")
                else:
                    found.add(f"{m.group(5)}.{m.group(6)}")
    return found


def definitions(tree: dict[str, list[dict[str, Any]]]) -> set[str]:
    """Everything ``tree`` defines, in the form L{references} uses."""
    defined = {f"var.{n}" for block in tree.get("variable", []) for n in block}
    defined |= {f"local.{n}" for block in tree.get("locals", []) for n in block}
    defined |= {f"module.{n}" for block in tree.get("module", []) for n in block}
    defined |= {f"data.{t}.{n}" for t, n in _labelled(tree.get("data", []))}
    defined |= {f"{t}.{n}" for t, n in _labelled(tree.get("resource", []))}
    return defined


def locals_(tree: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """All locals."""
    return {k: v for block in tree["locals"] for k, v in block.items()}


def template_names() -> set[str]:
    """The ``${name}`` placeholders of the boot script."""
    return set(re.findall(r"\$\{([A-Za-z_]\w*)\}", TEMPLATE.read_text(encoding="utf-8")))


class ParseTests(SynchronousTestCase):
    """The configuration is well-formed and self-consistent."""

    def setUp(self) -> None:
        self.tree = module(self)

    def test_every_file_parses(self) -> None:
        """Each .tf file parses on its own; the module has every kind of block it needs."""
        files = sorted(AWS.glob("*.tf"))
        self.assertGreater(len(files), 5)
        for path in files:
            self.assertTrue(parse(self, path.read_text(encoding="utf-8")), path.name)
        self.assertLessEqual(
            {"terraform", "provider", "variable", "locals", "resource", "data", "output"},
            set(self.tree),
        )

    def test_references_resolve(self) -> None:
        """Every var., local., module., data. and resource reference is defined."""
        self.assertEqual(references(self.tree) - definitions(self.tree), set())

    def test_nothing_unused(self) -> None:
        """Every variable and local is used somewhere."""
        unused = {d for d in definitions(self.tree) if d.startswith(("var.", "local."))}
        self.assertEqual(unused - references(self.tree), set())

    def test_resolver_finds_a_missing_reference(self) -> None:
        """The reference check reports names nothing defines (so it can fail)."""
        tree = parse(
            self,
            'variable "a" {}\n'
            'resource "aws_vpc" "main" {\n'
            '  cidr_block = var.missing\n  tags = { Name = "${var.a}-${local.gone}" }\n'
            "  x = data.aws_ami.none.id\n  y = aws_subnet.absent[0].id\n}\n",
        )
        self.assertEqual(
            references(tree) - definitions(tree),
            {"var.missing", "local.gone", "data.aws_ami.none", "aws_subnet.absent"},
        )

    def test_size_presets(self) -> None:
        """
        small, medium and large (exactly what var.size accepts) set the same keys;
        the group is 2-10 nodes; the cache always has a replica to fail over to.
        """
        presets = locals_(self.tree)["presets"]
        if isinstance(presets, list):
            (presets,) = presets
        self.assertEqual(set(presets), {"small", "medium", "large"})
        (variable,) = [b["size"] for b in self.tree["variable"] if "size" in b]
        (validation,) = variable["validation"]
        self.assertEqual(
            set(re.findall(r"\w+", validation["condition"].split("[")[1].split("]")[0])),
            set(presets),
        )
        keys = {frozenset(p) for p in presets.values()}
        self.assertEqual(len(keys), 1)
        for name, preset in presets.items():
            self.assertGreaterEqual(preset["asg_min"], 2, name)
            self.assertLessEqual(preset["asg_max"], 10, name)
            self.assertLessEqual(preset["asg_min"], preset["asg_desired"], name)
            self.assertLessEqual(preset["asg_desired"], preset["asg_max"], name)
            self.assertGreaterEqual(preset["cache_nodes"], 2, name)
        self.assertEqual(max(p["asg_max"] for p in presets.values()), 10)
        guide = (REPO / "docs" / "DEPLOYMENT.md").read_text(encoding="utf-8")
        for name in presets:
            cost = re.search(rf"\| `{name}` \|[^\n]*\$[0-9,]+", guide)
            self.assertIsNotNone(cost, f"docs/DEPLOYMENT.md has no cost row for {name}")

    def test_default_wheel_is_this_version(self) -> None:
        """The wheel the instances install by default is the one this checkout builds."""
        (variable,) = [
            b["warden_wheel_key"] for b in self.tree["variable"] if "warden_wheel_key" in b
        ]
        self.assertEqual(
            variable["default"].strip('"'), f"warden-{warden.__version__}-py3-none-any.whl"
        )

    def test_high_availability_settings(self) -> None:
        """Multi-AZ encrypted PostgreSQL with backups; Redis with automatic failover."""
        resources = _labelled(self.tree["resource"])
        db = resources[("aws_db_instance", "main")]
        for key in ("multi_az", "storage_encrypted", "deletion_protection"):
            self.assertIs(db[key], True, key)
        self.assertEqual(db["backup_retention_period"], "${var.backup_retention_days}")
        redis = resources[("aws_elasticache_replication_group", "main")]
        for key in (
            "automatic_failover_enabled",
            "multi_az_enabled",
            "at_rest_encryption_enabled",
        ):
            self.assertIs(redis[key], True, key)
        groups = resources[("aws_autoscaling_group", "warden")]
        self.assertEqual(groups["health_check_type"].strip('"'), "ELB")
        # The group replaces what a target group calls unhealthy: /readyz fails on
        # every node during a database failover, so no target group may ask it.
        targets = {n: b for (t, n), b in resources.items() if t == "aws_lb_target_group"}
        self.assertEqual(set(targets), {"sip", "admin"})
        for target in targets.values():
            (check,) = target["health_check"]
            self.assertEqual(check["path"].strip('"'), "/healthz")
        family = resources[("aws_db_parameter_group", "main")]["family"].strip('"')
        self.assertEqual(family, "postgres" + db["engine_version"].strip('"').split(".")[0])
        outputs = {n for block in self.tree["output"] for n in block}
        self.assertLessEqual({"sip_endpoint", "admin_endpoint", "database_endpoint"}, outputs)
        self.assertLessEqual({"redis_endpoint", "database_password_secret"}, outputs)


class UserDataTests(SynchronousTestCase):
    """The boot script renders to shell that configures a valid Warden node."""

    def setUp(self) -> None:
        self.tree = module(self)
        self.vars = locals_(self.tree)["user_data_vars"]

    def render(self) -> str:
        """The template with sample values (the real unit files for file() ones)."""
        values: dict[str, str] = {}
        ports = locals_(self.tree)
        for name, expression in self.vars.items():
            file_ = re.search(r'file\("\$\{path\.module\}/([^"]+)"\)', expression)
            local = re.fullmatch(r"\$\{local\.(\w+)\}", expression)
            if file_:
                values[name] = (AWS / file_.group(1)).read_text(encoding="utf-8")
            elif local:
                values[name] = str(ports[local.group(1)])
            elif name == "domains":
                values[name] = '["pbx.example.com"]'
            else:
                values[name] = f"sample-{name.replace('_', '-')}"
        text = TEMPLATE.read_text(encoding="utf-8")
        return re.sub(r"\$\{([A-Za-z_]\w*)\}", lambda m: values[m.group(1)], text)

    def test_template_and_values_match(self) -> None:
        """compute.tf passes exactly the values the template uses, and the unit files exist."""
        self.assertEqual(set(self.vars), template_names())
        for expression in self.vars.values():
            for path in re.findall(r'file\("\$\{path\.module\}/([^"]+)"\)', expression):
                self.assertTrue((AWS / path).resolve().is_file(), path)
                self.assertTrue((AWS / path).resolve().is_relative_to(DEPLOY / "systemd"))

    def test_renders_to_valid_shell(self) -> None:
        """
        bash -n accepts the rendered script, no unit file ends its heredoc early,
        and it fits EC2's user-data limit.
        """
        script = self.render()
        for path in (DEPLOY / "systemd").iterdir():
            self.assertNotIn("WARDEN_FILE", path.read_text(encoding="utf-8"))
        result = subprocess.run(
            ["bash", "-n"], input=script, capture_output=True, text=True, timeout=30, check=False
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("systemctl enable --now warden.service warden-backup.timer", script)
        # EC2 refuses user data over 16 KiB (before base64).
        self.assertLessEqual(len(script.encode()), 16384)

    def test_configuration_parses(self) -> None:
        """
        The warden.toml the script writes (its shell variables given sample
        values) is accepted by Warden: this node's id and address, the shared
        store and state, and the ports the security groups and load balancers open.
        """
        script = self.render()
        body = script.split("<<WARDEN_CONFIG\n", 1)[1].split("\nWARDEN_CONFIG\n", 1)[0]
        body = body.replace("$INSTANCE_ID", "i-0123456789abcdef0").replace(
            "$PRIVATE_IP", "10.40.100.7"
        )
        self.assertNotIn("$", body)
        config = parse_config_text(body, "user-data.sh.tftpl")
        ports = locals_(self.tree)
        self.assertEqual(config.node_id, "i-0123456789abcdef0")
        self.assertEqual(config.cluster.address, "10.40.100.7")
        self.assertEqual(config.media.address, "10.40.100.7")
        self.assertEqual(config.sip.port, ports["sip_port"])
        self.assertEqual(
            (config.media.port_min, config.media.port_max),
            (ports["media_port_min"], ports["media_port_max"]),
        )
        self.assertEqual(config.admin.listen, f"tcp:{ports['admin_port']}")
        self.assertEqual(
            config.admin.metrics_listen, f"tcp:{ports['metrics_port']}:interface=10.40.100.7"
        )
        self.assertEqual(config.store.password_file, "/etc/warden/store-password")
        self.assertTrue(config.store.url.startswith("postgresql://warden@"))
        self.assertIn("sslmode=require", config.store.url)
        self.assertTrue(config.state.url.startswith("redis://"))
        self.assertEqual(config.backup.directory, "/var/backups/warden")


class CheckovTests(SynchronousTestCase):
    """checkov's Terraform checks."""

    def test_checkov(self) -> None:
        """No failed check; every skip is a #checkov:skip comment with its reason."""
        report = checkov(self, AWS, "terraform")
        assert_checkov_clean(self, report)
        written = set()
        for path in AWS.glob("*.tf"):
            for line in path.read_text(encoding="utf-8").splitlines():
                m = re.match(r"\s*#checkov:skip=(CKV2?_AWS_\d+):(.+)", line)
                if m:
                    written.add(m.group(1))
        skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
        self.assertEqual(skipped, written)
