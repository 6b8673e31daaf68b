"""How mmjax installs, as far as a test can read it without a network: every dependency has a lower bound
and none an upper bound without the known break it avoids; the accelerator extras are jax's own; the
notebook installs mmjax keeping the runtime's jax. The installs themselves run in CI after the suite
(scripts/install_check.sh lower and keep: fresh venvs, minutes each)."""

import json
import re
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from lower_bounds import dependencies, lower_bounds  # noqa: E402

PYPROJECT = ROOT / "pyproject.toml"


def dependency_lines():
    """Each dependency's line of pyproject.toml, its comment included."""
    block = PYPROJECT.read_text().split("dependencies = [", 1)[1].split("\n]", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip().startswith('"')]


def test_every_dependency_has_a_lower_bound_and_no_untested_cap():
    bounds = lower_bounds(PYPROJECT)
    assert list(bounds) == [re.match(r"[\w.-]+", d).group() for d in dependencies(PYPROJECT)]
    assert bounds["jax"] == "0.6.1"
    for line in dependency_lines():
        requirement = line.split("#")[0]
        if re.search(r"<|==|~=|!=", requirement):
            assert "known break" in line, f"an upper bound without the known break it avoids: {line}"


def test_lower_bounds_script_turns_them_into_constraints():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "lower_bounds.py")], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines() == [f"{name}=={version}" for name, version in lower_bounds(PYPROJECT).items()]


def test_a_dependency_without_a_lower_bound_is_refused(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = [\n    "jax>=0.6.1",\n    "numpy",\n]\n')
    with pytest.raises(ValueError, match="'numpy' has no lower bound"):
        lower_bounds(tmp_path / "pyproject.toml")


def test_the_accelerator_extras_are_jaxs_own():
    text = PYPROJECT.read_text()
    extras = dict(re.findall(r'^(cuda\w*|tpu) = \["([^"]+)"\]', text, re.M))
    assert extras == {"cuda": "jax[cuda]", "cuda12": "jax[cuda12]", "cuda13": "jax[cuda13]>=0.7", "tpu": "jax[tpu]"}


def test_the_notebook_installs_mmjax_keeping_the_runtimes_jax():
    notebook = json.loads((ROOT / "notebooks" / "colab.ipynb").read_text())
    install = "".join(notebook["cells"][1]["source"])
    assert '"pip", "install"' in install and 'f"jax=={jax_version}"' in install
    assert "jax_version ==" in install or "== jax_version" in install  # and checks it did not change


@pytest.mark.parametrize("script", ["install_check.sh", "device_check.sh", "device_wheels.sh"])
def test_the_shell_scripts_parse(script):
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], check=True)
