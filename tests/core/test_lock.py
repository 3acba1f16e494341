"""The hash-pinned locks cover what pyproject.toml asks for, so `make serve`/`make test` install a full set.

`make` installs `requirements.lock` (runtime) or `requirements-dev.lock` (runtime + dev) with
`pip install --require-hashes`, then va-cds itself with `--no-deps`: a dependency added to pyproject.toml but
not locked would be missing at run time. Run `make lock` after changing dependencies.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def pins(lock: str) -> dict[str, tuple[str, int]]:
    """name → (version, number of hashes) for each requirement of a pip-compile lock."""
    out: dict[str, tuple[str, int]] = {}
    current: str | None = None
    for line in (ROOT / lock).read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            out[current] = (match.group(2), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = out[current]
            out[current] = (version, hashes + 1)
        elif not line.startswith((" ", "\t")):
            current = None
    return out


def _wanted(extra: bool) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    if extra:
        reqs += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]]
    reqs += [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]  # installed without isolation
    return [r for r in reqs if r.marker is None or r.marker.evaluate()]


@pytest.mark.parametrize(("lock", "dev"), [("requirements.lock", False), ("requirements-dev.lock", True)])
def test_every_dependency_is_locked_within_its_range_with_hashes(lock: str, dev: bool) -> None:
    locked = pins(lock)
    assert locked, f"{lock} has no pins"
    problems = []
    for req in _wanted(dev):
        name = canonicalize_name(req.name)
        if name not in locked:
            problems.append(f"{req.name} is not in {lock}: run `make lock`")
        elif not req.specifier.contains(locked[name][0], prereleases=True):
            problems.append(
                f"{req.name}=={locked[name][0]} in {lock} is outside {req.specifier}: run `make lock`"
            )
    assert problems == [], "\n".join(problems)
    assert all(hashes > 0 for _, hashes in locked.values()), "every pin carries its hashes"


def test_the_development_lock_installs_the_same_runtime_versions() -> None:
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    differ = {
        n: (v, dev.get(n, ("missing", 0))[0]) for n, (v, _) in runtime.items() if dev.get(n, ("",))[0] != v
    }
    assert differ == {}
