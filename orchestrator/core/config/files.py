"""Environment files read: YAML text to validated EnvironmentConfig, then promotion order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from orchestrator.core.config.models import MAX_NAME, NAME_PATTERN, EnvironmentConfig
from orchestrator.core.errors import UsageError
from orchestrator.core.secrets import url_secrets


@dataclass(frozen=True)
class Environments:
    """All environments, in promotion order (parents before children)."""

    by_name: dict[str, EnvironmentConfig]
    order: tuple[str, ...]

    def get(self, name: str) -> EnvironmentConfig:
        if name not in self.by_name:
            known = ", ".join(self.order) or "none"
            raise UsageError(f"Unknown environment {name!r}. Known environments: {known}.")
        return self.by_name[name]

    def path_to(self, name: str) -> list[str]:
        """The chain from the first environment down to `name`, inclusive."""
        path = [self.get(name).name]
        while (parent := self.by_name[path[-1]].promotes_from) is not None:
            path.append(parent)
        return path[::-1]


def load_environments(directory: Path) -> Environments:
    if not directory.is_dir():
        looked = directory.resolve()
        raise UsageError(
            f"The environments directory {looked} does not exist, and no parent directory "
            "holds a project (alembic.ini or environments/). Run from the project's directory "
            "or below it, create environments/ with one YAML file per environment, or set "
            "ORCHESTRATOR_PROJECT_DIR (or ORCHESTRATOR_ENVIRONMENTS_DIR)."
        )
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise UsageError(f"No environment files (*.yaml) in {directory}.")
    envs = [
        parse_environment(read_text_file(path, "Environment file"), str(path)) for path in files
    ]
    return order_environments(envs)


def parse_environment(text: str, source: str) -> EnvironmentConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UsageError(f"{source}{where}: not valid YAML ({problem}).") from None
    if not isinstance(data, dict):
        raise UsageError(f"{source}: expected a mapping of keys (name, database, ...).")
    try:
        env = EnvironmentConfig.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise UsageError(f"{source}: {describe_validation_error(exc)}") from None
    stem = Path(source).stem
    if env.name != stem:
        raise UsageError(
            f"{source}: `name` is {env.name!r} but must equal the file's stem {stem!r}."
        )
    if not NAME_PATTERN.match(env.name):
        raise UsageError(f"{source}: `name` {env.name!r} may use letters, digits, _ . - only.")
    if len(env.name) > MAX_NAME:
        raise UsageError(
            f"{source}: `name` is {len(env.name)} characters long; at most {MAX_NAME}."
        )
    if env.database.url and url_secrets(env.database.url):
        raise UsageError(
            f"{source}: `database.url` holds a password. Secrets never live in YAML: put the URL "
            "in a variable and name it with `database.url_env`."
        )
    return env


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown key `{key}`")
        elif error["type"] == "missing":
            parts.append(f"missing required key `{key}`")
        else:
            parts.append(f"`{key}`: {error['msg']}")
    return "; ".join(parts) + "."


def order_environments(envs: list[EnvironmentConfig]) -> Environments:
    by_name: dict[str, EnvironmentConfig] = {}
    for env in envs:
        if env.name in by_name:
            raise UsageError(f"Environment {env.name!r} is defined twice ({env.source}).")
        by_name[env.name] = env
    for env in envs:
        if env.promotes_from is not None and env.promotes_from not in by_name:
            raise UsageError(
                f"{env.source}: `promotes_from: {env.promotes_from}` names no environment. "
                f"Known environments: {', '.join(sorted(by_name))}."
            )
    order: list[str] = []
    level = sorted(name for name, env in by_name.items() if env.promotes_from is None)
    while level:
        order.extend(level)
        level = sorted(n for n, e in by_name.items() if e.promotes_from in level)
    if len(order) != len(by_name):
        cyclic = sorted(set(by_name) - set(order))
        raise UsageError(
            f"The `promotes_from` links of {', '.join(cyclic)} form a cycle: every chain must "
            "start at an environment without `promotes_from`."
        )
    return Environments(by_name=by_name, order=tuple(order))


def read_text_file(path: Path, what: str) -> str:
    """A configuration file's UTF-8 text; anything else is a UsageError naming the file."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a directory, not a file.") from None
    except OSError as exc:
        raise UsageError(f"{what} {path} cannot be read: {exc.strerror or exc}.") from None
    if b"\0" in data:
        raise UsageError(f"{what} {path} is not a text file: it holds binary data.") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{what} {path} is not UTF-8 text (byte {exc.start} cannot be decoded): save it "
            "as UTF-8."
        ) from None
