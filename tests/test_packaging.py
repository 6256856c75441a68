"""The base install: a fresh venv with ``pip install <repo>`` (no extras) is a working trainer-side client.

It must import the client and the trainer adapters, hold none of the engine's, the server's or the
builder's packages, put only ``mig_annotator`` into site-packages, annotate through a running service
(started from the full install, over the fake probe), and its console script must name the missing extras.
Building the venv takes about a minute (pip, from its cache).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mig_annotator.client import MigClient
from tests.service.support import small_traces

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
# The folders package-dir maps onto mig_annotator: what a source distribution holds besides the top files.
LAYER_FOLDERS = tuple(sorted(set(SETUPTOOLS["package-dir"].values())))
SOURCES = ("pyproject.toml", "README.md", "LICENSE", *LAYER_FOLDERS)
HEAVY = ("torch", "transformers", "fastapi", "uvicorn", "duckdb", "polars", "pyarrow", "math_verify", "typer")


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with only the base install of this checkout (copied first: the build leaves no files here)."""
    root = tmp_path_factory.mktemp("bare")
    source = root / "src"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    venv = root / "venv"
    base_python = Path(sysconfig.get_config_var("BINDIR")) / "python3"
    subprocess.run([str(base_python), "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return venv


def test_every_package_folder_of_the_layers_is_installed() -> None:
    """Each folder with an ``__init__.py`` under a mapped layer is in pyproject.toml's package list."""
    mapped = {name: ROOT / folder for name, folder in SETUPTOOLS["package-dir"].items()}
    found = set()
    for name, folder in mapped.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder).parts
            found.add(".".join((name, *relative)))
    assert found == set(SETUPTOOLS["packages"])
    assert not [path for path in ROOT.iterdir() if path.is_symlink()] + [
        path for folder in mapped.values() for path in folder.rglob("*") if path.is_symlink()
    ], "the layout has no symbolic links"


def run_in(venv: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=venv,  # not the checkout: imports must come from the installed package
    )


@pytest.fixture(scope="module")
def fake_service_url() -> Iterator[str]:
    """The reward service over the fake probe, in a subprocess of the full install."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.client.fake_service"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), f"the fake service did not start (exit {server.poll()})"
        yield url
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_the_base_install_has_the_client_and_none_of_the_heavy_packages(bare_venv: Path) -> None:
    probe = run_in(
        bare_venv,
        "import importlib.util, json, sys\n"
        "import mig_annotator.client, mig_annotator.client.trl, mig_annotator.client.verl\n"
        "from mig_annotator.client import MigClient, AsyncMigClient, MigRewardManager, compute_score, "
        "trl_reward_function, register_verl_reward_manager\n"
        "from mig_annotator.schemas.token_alignment import align_annotation\n"
        "from mig_annotator.trainer.advantages import group_token_advantages\n"
        "print(json.dumps({name: importlib.util.find_spec(name) is not None for name in sys.argv[1:]}))",
        *HEAVY,
    )
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == dict.fromkeys(HEAVY, False)


def test_the_base_install_puts_only_mig_annotator_into_site_packages(bare_venv: Path) -> None:
    (dist_info,) = bare_venv.glob("lib/python*/site-packages/mig_annotator-*.dist-info")
    assert (dist_info / "top_level.txt").read_text().split() == ["mig_annotator"]
    tops = {line.split(",")[0].split("/")[0] for line in (dist_info / "RECORD").read_text().splitlines()}
    assert tops == {"mig_annotator", dist_info.name, ".."}  # ".." is bin/mig-annotator
    assert (dist_info / "licenses" / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    site = dist_info.parent
    assert not any((site / name).exists() for name in LAYER_FOLDERS if name != "mig_annotator")
    assert all(
        (site / "mig_annotator" / name / "__init__.py").is_file()
        for name in LAYER_FOLDERS
        if name != "mig_annotator"
    )


def test_the_base_install_annotates_through_a_running_service(bare_venv: Path, fake_service_url: str) -> None:
    traces = small_traces(3, prefix="bare-")
    code = (
        "import json, sys\n"
        "from mig_annotator.client import MigClient, compute_score, trl_reward_function\n"
        "traces = json.loads(sys.argv[2])\n"
        "with MigClient(sys.argv[1]) as client:\n"
        "    annotations = client.annotate(traces)\n"
        "    reward = trl_reward_function(client, reward='outcome')\n"
        "    outcomes = reward(prompts=[t['question'] for t in traces],\n"
        "                      completions=[t['completion'] for t in traces],\n"
        "                      answer=[t['reference_answer'] for t in traces])\n"
        "score = compute_score('gsm8k', traces[1]['completion'], traces[1]['reference_answer'],\n"
        "                      {'question': traces[1]['question']}, base_url=sys.argv[1])\n"
        "print(json.dumps({'annotations': [a.model_dump(mode='json') for a in annotations],\n"
        "                  'outcomes': outcomes, 'score': score}))\n"
    )
    payload = json.dumps([t.model_dump(mode="json", exclude_none=True) for t in traces])
    result = run_in(bare_venv, code, fake_service_url, payload)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    with MigClient(fake_service_url) as client:
        expected = client.annotate(traces)
    assert answer["annotations"] == [a.model_dump(mode="json") for a in expected]
    assert answer["outcomes"] == [0.0, 1.0, 1.0]
    assert answer["score"]["outcome"] == 1.0
    assert answer["score"]["score"] == pytest.approx(1.0 + expected[1].process_reward)


def test_the_console_script_names_the_missing_engine_extras(bare_venv: Path) -> None:
    result = subprocess.run(
        [str(bare_venv / "bin" / "mig-annotator"), "score", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "pip install 'mig-annotator[engine]'" in result.stderr
    assert "torch" in result.stderr and "Traceback" not in result.stderr
