"""Run the Pulumi program under Pulumi's own mock runtime, as the CLI would for a stack.

The config is what the CLI would hand the program: ``Pulumi.yaml`` defaults overlaid with
``Pulumi.<stack>.yaml``. Every resource registration is recorded with its resolved inputs.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import yaml

import pulumi
from tests.support import REPO_ROOT

PROGRAM_DIR = REPO_ROOT / "pulumi"
PROJECT = "micro-agent"
STACKS = ("dev", "staging", "prod")
ACCOUNT = "123456789012"
REGION = "sa-east-1"
CREATED_CLUSTER_RESOURCE_ID = "cluster-MOCK7Q4K2ZP3XNY7ABCDEFGHIJ"

if str(PROGRAM_DIR) not in sys.path:
    # The CLI runs the program with its folder on sys.path; so do the tests.
    sys.path.insert(0, str(PROGRAM_DIR))


@dataclass
class Resource:
    """One registered resource: type token, logical name, resolved inputs, mock outputs."""

    type: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The physical id the mocks gave it (what ``resource.id`` resolves to)."""
        return f"{self.name}-id"


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Mocks that record every resource and answer with plausible AWS outputs."""

    resources: list[Resource] = field(default_factory=list)

    def new_resource(
        self, args: pulumi.runtime.MockResourceArgs
    ) -> tuple[str | None, dict[str, Any]]:
        outputs = dict(args.inputs)
        self.resources.append(Resource(args.typ, args.name, dict(args.inputs), outputs))
        physical = args.inputs.get("name") or f"{args.name}-id"
        service = args.typ.split(":")[1].split("/")[0]
        outputs.setdefault("arn", f"arn:aws:{service}:{REGION}:{ACCOUNT}:{physical}")
        if args.typ == "aws:s3/bucket:Bucket":
            outputs["bucket"] = f"{args.name}-bucket-1a2b3c"
            outputs["arn"] = f"arn:aws:s3:::{outputs['bucket']}"
        if args.typ == "aws:kms/key:Key":
            outputs["keyId"] = "0a1b2c3d-key"
        if args.typ == "aws:secretsmanager/secret:Secret":
            # Secrets Manager appends six random characters to the name.
            outputs["arn"] = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{physical}-AbCdEf"
        if args.typ == "aws:sesv2/configurationSet:ConfigurationSet":
            name = args.inputs["configurationSetName"]
            outputs["arn"] = f"arn:aws:ses:{REGION}:{ACCOUNT}:configuration-set/{name}"
        if args.typ == "aws:rds/cluster:Cluster":
            outputs["endpoint"] = f"{args.name}.cluster-xyz.{REGION}.rds.amazonaws.com"
            outputs["masterUserSecrets"] = [
                {"secretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!cluster-1"}
            ]
            outputs["clusterResourceId"] = CREATED_CLUSTER_RESOURCE_ID
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[Any] | None]:
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT,
                "arn": f"arn:aws:iam::{ACCOUNT}:user/ci",
                "userId": "AIDA",
                "id": ACCOUNT,
            }, []
        if args.token == "aws:index/getRegion:getRegion":
            return {
                "name": REGION,
                "region": REGION,
                "id": REGION,
                "description": "South America (Sao Paulo)",
                "endpoint": "ec2",
            }, []
        return {}, []

    def of_type(self, token: str) -> list[Resource]:
        return [r for r in self.resources if r.type == token]

    def one(self, token: str, name_part: str = "") -> Resource:
        found = [r for r in self.of_type(token) if name_part in r.name]
        assert len(found) == 1, f"expected one {token} named *{name_part}*, got {found}"
        return found[0]


def stack_config(stack: str, **overrides: Any) -> dict[str, str]:
    """The config the CLI would pass: Pulumi.yaml defaults, the stack file, then overrides."""
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    values: dict[str, Any] = {
        f"{PROJECT}:{key}": spec["default"] for key, spec in project["config"].items()
    }
    stack_file = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())
    values.update(stack_file.get("config") or {})
    values.update({f"{PROJECT}:{key}": value for key, value in overrides.items()})
    return {key: _render(value) for key, value in values.items()}


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def load_program() -> Any:
    """Import pulumi/__main__.py afresh as a module (its main() is not run on import)."""
    spec = importlib.util.spec_from_file_location(
        "micro_agent_program", PROGRAM_DIR / "__main__.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def _tracking() -> Iterator[list[pulumi.CustomResource]]:
    created: list[pulumi.CustomResource] = []
    original = pulumi.CustomResource.__init__

    def init(self: pulumi.CustomResource, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        created.append(self)

    pulumi.CustomResource.__init__ = init  # type: ignore[method-assign]
    try:
        yield created
    finally:
        pulumi.CustomResource.__init__ = original  # type: ignore[method-assign]


def run_stack(
    stack: str,
    check: Callable[[RecordingMocks, dict[str, Any]], None],
    *,
    extra: Callable[[], None] | None = None,
    **overrides: Any,
) -> pulumi.Output[None]:
    """Run the program for a stack; call ``check`` inside an apply once every resource exists.

    ``extra`` registers more resources after the program (a policy check's bad case);
    ``overrides`` replace config keys. Call it from a ``@pulumi.runtime.test`` test and return
    what it returns.
    """
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False)
    pulumi.runtime.set_all_config(stack_config(stack, **overrides))
    program = load_program()
    with _tracking() as created:
        components = program.main()
        if extra is not None:
            extra()
    urns = [resource.urn for resource in created]
    return pulumi.Output.all(*urns).apply(lambda _: check(mocks, components))


_RECORDED: dict[str, RecordingMocks] = {}


def recorded_stack(stack: str, check: Callable[[RecordingMocks], None]) -> pulumi.Output[None]:
    """Like run_stack for read-only checks of an unmodified stack: the program runs once per
    stack and process, later callers check the same recording (inside an apply, too)."""
    if stack in _RECORDED:
        return pulumi.Output.from_input(_RECORDED[stack]).apply(check)

    def remember(mocks: RecordingMocks, components: dict[str, Any]) -> None:
        _RECORDED[stack] = mocks
        check(mocks)

    return run_stack(stack, remember)
