"""Set-up files agree with each other and with the README."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _name_and_spec(req: str) -> tuple[str, str]:
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", req)
    name = {"pytorch": "torch"}.get(m.group(1).lower(), m.group(1).lower())
    return name, m.group(2).replace(" ", "")


def test_pyproject_and_environment_list_the_same_dependencies():
    py = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pip_deps = dict(_name_and_spec(d) for d in py["dependencies"] + py["optional-dependencies"]["dev"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"]
    conda = dict(_name_and_spec(d) for d in env if isinstance(d, str) and not d.startswith(("python", "pip")))
    nested = [d for d in env if isinstance(d, dict)][0]["pip"]
    conda.update(_name_and_spec(d) for d in nested if not d.startswith("-e"))
    assert conda == pip_deps
    assert pip_deps["jupyter-book"] == ">=1,<2"


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    cmd = ".venv/bin/python -m pytest"
    assert cmd in readme and cmd in ci
    assert "bash .ci/setup" in readme and "bash .ci/setup" in ci
    assert "rsbook book" in readme and "rsbook book" in ci


def test_constraints_pin_every_dependency_within_its_range():
    from packaging.requirements import Requirement

    py = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (REPO / ".ci" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    assert not {"torch", "torchvision"} & set(pins)  # the torch pair is chosen by .ci/setup, not pinned here
    for dep in py["dependencies"] + py["optional-dependencies"]["dev"]:
        req = Requirement(dep)
        if req.name in ("torch", "torchvision"):
            continue
        key = req.name.lower().replace("_", "-")
        assert key in pins, f"{req.name} is not pinned in .ci/constraints.txt (run bash .ci/lock)"
        assert req.specifier.contains(pins[key]), f"{req.name}=={pins[key]} is outside {req.specifier}"
    assert "-c .ci/constraints.txt" in (REPO / ".ci" / "setup").read_text()
