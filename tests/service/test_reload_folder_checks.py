"""A reload reads the checkpoint's own files before it trusts them: a folder not shaped like a checkpoint
(``/proc``, ``/etc``), weight files missing tensors or truncated, and a corrupt tokenizer are each a 422
naming the folder or file, the probe keeps serving its weights, and the next reload is not blocked."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import httpx
import pytest

from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.engine.probe.transformers_probe import TransformersProbe
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.long_context import tiny_long_context_model
from tests.service.support import live_server, small_traces, trace_json

ADMIN = {"Authorization": "Bearer admin-key"}


def _half_the_tensors(source: Path, target: Path) -> Path:
    """A copy of ``source`` whose model.safetensors holds only every other tensor."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    tensors = load_file(source / "model.safetensors")
    kept = {name: tensor for index, (name, tensor) in enumerate(sorted(tensors.items())) if index % 2 == 0}
    save_file(kept, target / "model.safetensors", metadata={"format": "pt"})
    return target


def _truncated(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return target


def _corrupt_tokenizer(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    (target / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": 7', "utf-8")
    return target


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    running = tiny_long_context_model(root / "running", 2048, seed=1)
    other = tiny_long_context_model(root / "other", 2048, seed=2)
    return {
        "running": running,
        "other": other,
        "half": _half_the_tensors(other, root / "half"),
        "truncated": _truncated(other, root / "truncated"),
        "tokenizer": _corrupt_tokenizer(other, root / "tokenizer"),
    }


def test_the_tensor_and_file_checks_read_the_safetensors_headers(folders: dict[str, Path]) -> None:
    from mig_annotator.engine.probe.checkpoint_files import safetensors_shapes

    full = safetensors_shapes(folders["other"] / "model.safetensors")
    half = safetensors_shapes(folders["half"] / "model.safetensors")
    assert 0 < len(half) < len(full) and set(half) < set(full)
    header = (folders["other"] / "model.safetensors").read_bytes()[:8]
    assert struct.unpack("<Q", header)[0] > 0
    assert json.loads((folders["running"] / "config.json").read_text())


def test_bad_checkpoint_folders_are_refused_by_name_and_the_probe_keeps_serving(
    folders: dict[str, Path],
) -> None:
    settings = ServiceSettings(
        audit_enabled=False, api_keys={"admin": "admin-key"}, admin_key_ids=["admin"], reload_timeout_s=120
    )
    probe = TransformersProbe(TransformersProbeSettings(model=str(folders["running"]), threads=1))
    body = {"traces": [trace_json(t) for t in small_traces(2)]}
    with (
        live_server(create_app(settings, probe=probe)) as url,
        httpx.Client(base_url=url, timeout=60, headers=ADMIN) as http,
    ):
        before = http.post("/v1/annotate", json=body).json()["annotations"]

        def refused(folder: Path | str) -> str:
            answer = http.post("/v1/admin/reload", json={"model": str(folder)})
            assert answer.status_code == 422, answer.text
            assert answer.json()["fields"][0]["field"] == "model"
            return str(answer.json()["message"])

        assert "no config.json" in refused("/proc")  # refused before anything in it is read
        assert "no config.json" in refused("/etc")  # nothing hashed (no /etc/shadow digest)
        message = refused(folders["half"])
        assert "tensors missing" in message and "model.layers" in message
        assert "model.safetensors" in refused(folders["truncated"])
        assert "tokenizer.json" in refused(folders["tokenizer"])
        after = http.post("/v1/annotate", json=body).json()["annotations"]
        assert [a["v0"] for a in after] == [a["v0"] for a in before]
        assert {a["probe_version"] for a in after} == {1}
        good = http.post("/v1/admin/reload", json={"model": str(folders["other"])})
        assert good.status_code == 200 and good.json()["probe_version"] == 2


def test_a_reload_past_its_time_bound_is_refused_and_releases_the_lock(folders: dict[str, Path]) -> None:
    settings = ServiceSettings(
        audit_enabled=False, api_keys={"admin": "admin-key"}, admin_key_ids=["admin"], reload_timeout_s=0.01
    )
    probe = TransformersProbe(TransformersProbeSettings(model=str(folders["running"]), threads=1))
    with (
        live_server(create_app(settings, probe=probe)) as url,
        httpx.Client(base_url=url, timeout=60, headers=ADMIN) as http,
    ):
        for _ in range(2):  # the second is not held behind the first's stuck stage
            answer = http.post("/v1/admin/reload", json={"model": str(folders["other"])})
            assert answer.status_code == 422, answer.text
            assert "MIG_RELOAD_TIMEOUT_S" in answer.json()["message"]
        assert http.get("/v1/info").json()["probe"]["fingerprint"] == probe.identity().fingerprint
