"""The outcome of one run on one database: plain data for the CLI and the fleet."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RunResult:
    env: str
    target: str
    run_id: str
    outcome: str
    applied: list[str] = field(default_factory=list)
    message: str = ""
    exit_code: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
