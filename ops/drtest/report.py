"""
The drill's report: steps with durations and results, RTO and RPO against the
targets, pass or fail; as JSON (for compliance records) and as a short summary.
"""

from __future__ import annotations

import json
import os
from typing import Any

import attrs

import warden
from warden.backup.manifest import iso_time


@attrs.define
class Step:
    """One step of the drill."""

    name: str
    ok: bool
    seconds: float
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        """The step in the JSON report."""
        return {"name": self.name, "ok": self.ok, "seconds": round(self.seconds, 3),
                "detail": self.detail}  # fmt: skip


@attrs.define
class Report:
    """Everything the drill found out."""

    test_type: str
    target_rto: float
    target_rpo: float
    started_at: float
    backup: str = ""
    backup_created_at: float | None = None
    newest_data_at: float | None = None
    finished_at: float | None = None
    rto: float | None = None
    rpo: float | None = None
    steps: list[Step] = attrs.Factory(list)
    problems: list[str] = attrs.Factory(list)
    dry_run: bool = False

    @property
    def passed(self) -> bool:
        """No problem, every step succeeded, RTO and RPO measured and within target."""
        if self.dry_run:
            return not self.problems
        return (
            not self.problems
            and all(step.ok for step in self.steps)
            and self.rto is not None
            and self.rto <= self.target_rto
            and self.rpo is not None
            and self.rpo <= self.target_rpo
        )

    def fail(self, problem: str) -> None:
        """Record a problem (the drill fails)."""
        self.problems.append(problem)

    def judge(self) -> None:
        """Turn missed objectives into problems."""
        if self.rto is not None and self.rto > self.target_rto:
            self.fail(f"RTO {self.rto:.1f}s exceeds the target of {self.target_rto:g}s")
        if self.rpo is not None and self.rpo > self.target_rpo:
            self.fail(f"RPO {self.rpo:.1f}s exceeds the target of {self.target_rpo:g}s")

    def as_json(self) -> dict[str, Any]:
        """The JSON report."""

        def when(value: float | None) -> str | None:
            return iso_time(value) if value is not None else None

        return {
            "tool": "warden-drtest",
            "warden_version": warden.__version__,
            "result": "pass" if self.passed else "fail",
            "dry_run": self.dry_run,
            "test_type": self.test_type,
            "backup": self.backup,
            "backup_created_at": when(self.backup_created_at),
            "newest_data_at": when(self.newest_data_at),
            "started_at": when(self.started_at),
            "finished_at": when(self.finished_at),
            "rto_seconds": None if self.rto is None else round(self.rto, 3),
            "rpo_seconds": None if self.rpo is None else round(self.rpo, 3),
            "targets": {"rto_seconds": self.target_rto, "rpo_seconds": self.target_rpo},
            "steps": [step.as_json() for step in self.steps],
            "problems": list(self.problems),
        }

    def summary(self) -> str:
        """A few lines for a human."""
        verdict = "PASS" if self.passed else "FAIL"
        if self.dry_run:
            verdict = "plan complete" if self.passed else "FAIL (the plan cannot run)"
        lines = [f"warden-drtest {self.test_type}: {verdict}"]
        if self.backup:
            lines.append(f"  backup: {self.backup}")
        for step in self.steps:
            mark = "ok  " if step.ok else "FAIL"
            detail = f"  {step.detail}" if step.detail else ""
            lines.append(f"  [{mark}] {step.name} ({step.seconds:.2f}s){detail}")
        if self.rto is not None:
            lines.append(f"  RTO {self.rto:.2f}s (target {self.target_rto:g}s)")
        if self.rpo is not None:
            lines.append(f"  RPO {self.rpo:.2f}s (target {self.target_rpo:g}s)")
        lines.extend(f"  problem: {p}" for p in self.problems)
        return "\n".join(lines)

    def save(self, path: str) -> None:
        """Write the JSON report atomically."""
        partial = path + ".partial"
        with open(partial, "w", encoding="utf-8") as f:
            json.dump(self.as_json(), f, indent=2)
            f.write("\n")
        os.replace(partial, path)
