"""What the package says about itself: its version, its licence, the Pipecat it is tested with."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

import pipecat_telnyx_tts

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_has_one_source_which_the_build_reads():
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "pipecat_telnyx_tts.__version__"
    # setuptools reads the attribute without importing the package: it must be a plain literal.
    init = (ROOT / "pipecat_telnyx_tts" / "__init__.py").read_text()
    assert re.search(r'^__version__ = "\d+\.\d+\.\d+"$', init, re.M)
    assert re.fullmatch(r"\d+\.\d+\.\d+", pipecat_telnyx_tts.__version__)


def test_the_installed_metadata_carries_that_version():
    assert importlib.metadata.version("pipecat-telnyx-tts") == pipecat_telnyx_tts.__version__


def test_the_licence_file_is_the_one_the_metadata_names():
    assert PYPROJECT["project"]["license"] == {"text": "BSD-2-Clause"}
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("BSD 2-Clause License")
    assert "pipecat-telnyx-tts contributors" in licence


def test_every_pipecat_requirement_allows_only_the_tested_minor_and_admits_the_installed_one():
    """The code uses private pipecat members; a range wider than what the suite ran on is a
    promise nobody tested."""
    installed = importlib.metadata.version("pipecat-ai")
    project = PYPROJECT["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    pins = [Requirement(line) for line in lines if Requirement(line).name == "pipecat-ai"]
    assert len(pins) >= 3
    for pin in pins:
        assert installed in pin.specifier, f"{pin} does not admit the tested pipecat {installed}"
        assert "1.15.0" not in pin.specifier, f"{pin} admits an untested minor release"
    requirements = (ROOT / "examples" / "phone_agent" / "requirements.txt").read_text()
    example_pins = [
        Requirement(line) for line in requirements.splitlines() if line.startswith("pipecat-ai")
    ]
    assert [str(p.specifier) for p in example_pins] == [str(pins[0].specifier)]
