"""POST /v1/admin/reload on a real server: the engine's numbers on the new folder, versions, bad folders."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mig_annotator.engine.annotator import Annotator
from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.engine.probe.transformers_probe import TransformersProbe
from mig_annotator.service.app import create_app
from mig_annotator.service.settings import ServiceSettings
from tests.long_context import tiny_long_context_model
from tests.service.support import live_server, small_traces, trace_json

ADMIN = {"Authorization": "Bearer admin-key"}
USER = {"Authorization": "Bearer user-key"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "a": tiny_long_context_model(root / "a", 2048, seed=1),
        "b": tiny_long_context_model(root / "b", 2048, seed=2),
        "wide": tiny_long_context_model(root / "wide", 2048, seed=1, hidden_size=96, heads=4),
    }


def _engine_values(folder: Path, traces) -> list[list[float]]:
    probe = TransformersProbe(TransformersProbeSettings(model=str(folder), threads=1))
    with Annotator(probe) as annotator:
        return [[a.v0, *(s.v for s in a.steps)] for a in annotator.annotate(traces)]


def _values(annotation: dict) -> list[float]:
    return [annotation["v0"], *(step["v"] for step in annotation["steps"])]


def _close(first: list[float], second: list[float]) -> bool:
    return len(first) == len(second) and all(abs(a - b) <= 1e-5 for a, b in zip(first, second, strict=True))


def test_reload_serves_the_new_folder_versions_and_refuses_bad_ones(folders, tmp_path: Path) -> None:
    traces = small_traces(3)
    expected = {name: _engine_values(folders[name], traces) for name in ("a", "b")}
    settings = ServiceSettings(
        audit_enabled=False,
        api_keys={"admin": "admin-key", "user": "user-key"},
        admin_key_ids=["admin"],
    )
    probe = TransformersProbe(TransformersProbeSettings(model=str(folders["a"]), threads=1))
    body = {"traces": [trace_json(t) for t in traces]}
    with (
        live_server(create_app(settings, probe=probe)) as url,
        httpx.Client(base_url=url, timeout=60) as http,
    ):

        def annotate(**extra) -> httpx.Response:
            return http.post("/v1/annotate", json={**body, **extra}, headers=USER)

        first = annotate().json()["annotations"]
        assert [a["probe_version"] for a in first] == [1, 1, 1]
        assert all(_close(_values(a), v) for a, v in zip(first, expected["a"], strict=True))
        assert (
            http.post("/v1/admin/reload", json={"model": str(folders["b"])}, headers=USER).status_code == 403
        )
        assert annotate(min_probe_version=2).status_code == 409

        reloaded = http.post("/v1/admin/reload", json={"model": str(folders["b"])}, headers=ADMIN)
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["probe_version"] == 2
        second = annotate(min_probe_version=2).json()["annotations"]
        assert [a["probe_version"] for a in second] == [2, 2, 2]
        assert all(_close(_values(a), v) for a, v in zip(second, expected["b"], strict=True))
        assert second[0]["probe_identity"] == reloaded.json()["fingerprint"] != first[0]["probe_identity"]
        # the same weights asked for again (another reward worker of the same trainer): nothing changes
        again = http.post("/v1/admin/reload", json={"model": str(folders["b"])}, headers=ADMIN)
        assert again.status_code == 200 and again.json()["probe_version"] == 2
        assert again.json()["fingerprint"] == reloaded.json()["fingerprint"]

        empty = tmp_path / "empty"
        empty.mkdir()
        for folder, named in (
            (folders["wide"], "hidden_size"),
            (empty, "config.json"),
            (tmp_path / "no", "no such"),
        ):
            refused = http.post("/v1/admin/reload", json={"model": str(folder)}, headers=ADMIN)
            assert refused.status_code == 422 and named in refused.json()["message"], refused.text
        still = annotate().json()["annotations"]  # the old probe keeps serving
        assert [a["probe_version"] for a in still] == [2, 2, 2]
        assert all(_close(_values(a), v) for a, v in zip(still, expected["b"], strict=True))

        # under load: reload back to "a" while requests run; none lost, each annotation one version's numbers
        with ThreadPoolExecutor(max_workers=4) as pool:
            pending = [pool.submit(annotate) for _ in range(8)]
            swap = http.post("/v1/admin/reload", json={"model": str(folders["a"])}, headers=ADMIN)
            answers = [future.result() for future in pending]
        assert swap.status_code == 200 and swap.json()["probe_version"] == 3
        assert all(answer.status_code == 200 for answer in answers)
        by_version = {2: expected["b"], 3: expected["a"]}
        for answer in answers:
            for annotation, index in zip(answer.json()["annotations"], range(3), strict=True):
                assert _close(_values(annotation), by_version[annotation["probe_version"]][index])
