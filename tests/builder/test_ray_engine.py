"""`build --engine ray` on a real local Ray cluster (``ray start --head``, not local mode): the same output
as a local build, a killed actor costs nothing, a killed driver resumes.

The fake probe keeps the rows few and the calls fast; the cluster's workers import it from the checkout.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mig_annotator.builder import checkpoints as ck
from mig_annotator.builder.errors import BuildError
from mig_annotator.builder.layout import OutputLayout
from mig_annotator.builder.pipeline import run_build
from mig_annotator.engine import atomic_files
from tests.builder.conftest import REPO, FakeProbe, arithmetic_rows, run_cli, write_jsonl
from tests.builder.ray_support import FailingProbeFactory, FakeProbeFactory, OtherModelFactory, ray_plan
from tests.builder.test_resume import SimulatedCrash, assert_same_output, fake_inputs, output_state

ray_engine = pytest.importorskip("mig_annotator.builder.ray_engine")
pytest.importorskip("ray.data")
pytestmark = pytest.mark.ray

RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A two-CPU head node started with `ray start`, the checkout on the workers' PYTHONPATH."""
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    # Token authentication off on both sides: a token file left by an earlier local Ray (~/.ray/auth_token)
    # would otherwise make the head require a token that the driver does not send.
    settings = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)  # the drivers: this process and the ones it starts
    env = os.environ | {"PYTHONPATH": str(REPO)}
    start = [
        str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--port", str(port),
        "--include-dashboard=false",
        "--object-store-memory", str(100 * 1024 * 1024), "--temp-dir", temp_dir,
    ]  # fmt: skip
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _options(address: str, probes: int = 2):
    return ray_engine.RayOptions(address=address, num_probes=probes, actor_resources={"num_cpus": 0.5})


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The inputs (two bad rows among twelve) and their local build."""
    root = tmp_path_factory.mktemp("ray-reference")
    source = fake_inputs(root)
    run_build(ray_plan(source, root / "local"), FakeProbe())
    return source, output_state(root / "local")


def _wait_for(condition, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _committed_rows(source: Path, out: Path) -> int:
    """Input rows in committed windows and shards (a shard's window markers go when its part is written)."""
    plan = ray_plan(source, out)
    return sum(ck.committed_rows(plan.layout, shard) for shard in plan.shards)


def test_a_ray_build_with_two_actors_equals_the_local_build(
    ray_address: str, reference: tuple[Path, dict], tmp_path: Path
) -> None:
    source, expected = reference
    result = ray_engine.run_ray_build(
        ray_plan(source, tmp_path / "ray"), FakeProbeFactory(), _options(ray_address)
    )
    assert result.manifest.counts is not None
    assert (result.manifest.counts.annotated, result.manifest.counts.rejected) == (10, 2)
    assert_same_output(output_state(tmp_path / "ray"), expected)
    assert not (tmp_path / "ray" / "_work").exists()

    again = ray_engine.run_ray_build(
        ray_plan(source, tmp_path / "ray"), FakeProbeFactory(), _options(ray_address)
    )
    assert again.already_complete


def test_a_killed_actor_is_restarted_and_the_build_equals_an_uninterrupted_one(
    ray_address: str, reference: tuple[Path, dict], tmp_path: Path
) -> None:
    source, expected = reference
    out, pids = tmp_path / "ray", tmp_path / "pids"
    factory = FakeProbeFactory(delay_s=1.0, pid_dir=str(pids))
    outcome: dict[str, object] = {}

    def build() -> None:
        try:
            outcome["result"] = ray_engine.run_ray_build(
                ray_plan(source, out), factory, _options(ray_address)
            )
        except BaseException as error:  # reported by the test thread below
            outcome["error"] = error

    thread = threading.Thread(target=build)
    thread.start()
    _wait_for(
        lambda: len(list(pids.glob("*"))) >= 2 and _committed_rows(source, out) >= 2, "two actors at work"
    )
    victim = next(pid for pid in sorted(int(path.name) for path in pids.glob("*")) if _alive(pid))
    assert not OutputLayout(out).success.exists()
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert_same_output(output_state(out), expected)


def _alive(pid: int) -> bool:
    """Whether the process runs (the pid folder also names actors that already exited, e.g. a retried one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_driver_leaves_a_build_that_a_rerun_resumes(
    ray_address: str, reference: tuple[Path, dict], tmp_path: Path
) -> None:
    source, expected = reference
    out = tmp_path / "ray"
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.builder.ray_support", str(source), str(out), ray_address, "1.0"],
        cwd=REPO,
        env=os.environ | {"PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: _committed_rows(source, out) >= 4 or driver.poll() is not None, "committed windows")
        assert driver.poll() is None, "the driver finished before it could be killed"
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert not OutputLayout(out).success.exists()

    result = ray_engine.run_ray_build(ray_plan(source, out), FakeProbeFactory(), _options(ray_address))
    assert result.resumed_rows >= 4  # two committed windows of two rows
    assert result.manifest.timings is not None and result.manifest.timings.sessions == 2
    assert_same_output(output_state(out), expected)


def test_the_ray_engine_finishes_a_build_the_local_engine_started(
    ray_address: str, reference: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both engines write the same checkpoints, so either finishes the other's build."""
    source, expected = reference
    out = tmp_path / "mixed"
    real_replace = os.replace
    writes = 0

    def crash_at_the_eighth_write(src: object, dst: object) -> None:
        nonlocal writes
        writes += 1
        if writes == 8:
            raise SimulatedCrash
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(atomic_files.os, "replace", crash_at_the_eighth_write)
    with pytest.raises(SimulatedCrash):
        run_build(ray_plan(source, out), FakeProbe())
    monkeypatch.setattr(atomic_files.os, "replace", real_replace)
    assert _committed_rows(source, out) >= 2

    result = ray_engine.run_ray_build(ray_plan(source, out), FakeProbeFactory(), _options(ray_address, 1))
    assert result.resumed_rows > 0
    assert_same_output(output_state(out), expected)


def test_a_failing_probe_stops_the_build_with_its_error_and_a_rerun_finishes_it(
    ray_address: str, reference: tuple[Path, dict], tmp_path: Path
) -> None:
    source, expected = reference
    out = tmp_path / "ray"
    with pytest.raises(BuildError, match="the probe backend is gone"):
        ray_engine.run_ray_build(ray_plan(source, out), FailingProbeFactory(1), _options(ray_address, 1))
    assert not OutputLayout(out).success.exists()

    ray_engine.run_ray_build(ray_plan(source, out), FakeProbeFactory(), _options(ray_address, 1))
    assert_same_output(output_state(out), expected)


def test_a_probe_other_than_the_planned_one_is_refused(
    ray_address: str, reference: tuple[Path, dict], tmp_path: Path
) -> None:
    source, _ = reference
    with pytest.raises(BuildError, match=r"the probe is fake:another-model.* planned with fake:fake-probe"):
        ray_engine.run_ray_build(
            ray_plan(source, tmp_path / "ray"), OtherModelFactory(), _options(ray_address, 1)
        )


def test_actor_resources_parse_from_json_or_pairs() -> None:
    parse = ray_engine.parse_actor_resources
    assert parse('{"num_gpus": 1}') == {"num_gpus": 1.0}
    assert parse("num_cpus=0.5, accelerator_type_H100=0.01") == {
        "num_cpus": 0.5,
        "accelerator_type_H100": 0.01,
    }
    options = ray_engine.RayOptions(actor_resources=parse("num_gpus=1,num_cpus=2,memory=1e9,TPU=4"))
    assert options.resource_args() == {
        "num_gpus": 1.0,
        "num_cpus": 2.0,
        "memory": 1e9,
        "resources": {"TPU": 4.0},
    }
    with pytest.raises(BuildError, match="--actor-resources"):
        parse("num_gpus")
    with pytest.raises(BuildError, match="--num-probes 0"):
        ray_engine.RayOptions(num_probes=0)


def test_the_cli_refuses_an_unknown_engine_and_unreadable_actor_resources(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", arithmetic_rows(2))
    unknown = run_cli("build", str(source), "--out", str(tmp_path / "a"), "--engine", "spark")
    assert unknown.returncode == 2
    assert "--engine spark: choose local or ray" in unknown.stderr
    bad = run_cli(
        "build", str(source), "--out", str(tmp_path / "b"), "--engine", "ray", "--actor-resources", "gpus"
    )
    assert bad.returncode == 2
    assert "--actor-resources 'gpus'" in bad.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
