"""A small reader of deploy/docker/Dockerfile for the tests: no Docker runs here, so
the tests read what the image would do (its stages, ENV, ENTRYPOINT and CMD)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parent.parent / "deploy" / "docker" / "Dockerfile"


def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per build stage, continuation lines joined, ARGs
    before the first FROM substituted into the FROM lines."""
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        if keyword == "FROM":
            rest = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest)
            stages.append([])
        stages[-1].append((keyword, rest))
    return stages


def instructions(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [rest for kw, rest in stage if kw == keyword]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in instructions(stage, "ENV"):
        for item in shlex.split(rest):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages(DOCKERFILE.read_text())[-1]


def docker_command() -> list[str]:
    """What the container runs: the exec-form ENTRYPOINT followed by CMD."""
    stage = final_stage()
    return json.loads(instructions(stage, "ENTRYPOINT")[-1]) + json.loads(
        instructions(stage, "CMD")[-1])
