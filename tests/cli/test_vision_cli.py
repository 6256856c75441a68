"""`score` and `build` on traces whose questions hold images, with a tiny vision-language model
folder (`--model`; an Idefics3- and a Qwen2-VL-shaped one): packed scoring equals the naive probe
in process to 1e-4 (fp32)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mig_annotator.builder.report import ReportOptions, write_report
from tests.cli.test_cli import json_lines, run_cli


def test_score_reads_image_paths_relative_to_the_input_and_base64_parts(
    vlm_family: tuple[Path, dict[str, list[float]]], vision_rows: Path
) -> None:
    folder, vision_reference = vlm_family
    result = run_cli(
        "score",
        "--input",
        str(vision_rows),
        "--model",
        str(folder),
        "--threads",
        "1",
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    annotations = {row["trace_id"]: row for row in json_lines(result.stdout)}
    assert set(annotations) == set(vision_reference) == {"path-0", "path-1", "chat-base64", "text-only"}
    for trace_id, expected in vision_reference.items():
        annotation = annotations[trace_id]
        values = [annotation["v0"], *(step["v"] for step in annotation["steps"])]
        assert values == pytest.approx(expected, abs=1e-4, rel=0), trace_id


def test_score_names_the_part_of_a_missing_image(tmp_path: Path, tiny_vlm_folder: Path) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_text(
        '{"id": "a", "question": "Q?", "images": ["missing.png"], "completion": "It is 2.", '
        '"reference_answer": "2"}\n',
        encoding="utf-8",
    )
    result = run_cli("score", "--input", str(source), "--model", str(tiny_vlm_folder), "--no-progress")
    assert result.returncode != 0
    assert f"question[0].content[0].image: no such file {str(tmp_path / 'missing.png')!r}" in result.stderr


def test_build_reads_the_images_column_scores_like_the_naive_probe_and_the_report_shows_the_image(
    tmp_path: Path, vlm_family: tuple[Path, dict[str, list[float]]], vision_rows: Path
) -> None:
    folder, vision_reference = vlm_family
    out = tmp_path / "dataset"
    done = run_cli(
        "build", str(vision_rows), "--out", str(out), "--model", str(folder), "--threads", "1",
        "--no-progress", "--fail-on-reject",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {row["trace_id"]: row for row in pq.read_table(out / "part-00000.parquet").to_pylist()}
    assert set(rows) == set(vision_reference)
    for trace_id, expected in vision_reference.items():
        values = [rows[trace_id]["v0"], *(step["v"] for step in rows[trace_id]["steps"])]
        assert values == pytest.approx(expected, abs=1e-4, rel=0), trace_id
    scene = (vision_rows.parent / "scenes" / "scene0.png").read_bytes()
    [image] = rows["path-0"]["question_images"]
    assert image["sha256"] == hashlib.sha256(scene).hexdigest() and (image["width"], image["height"]) == (
        96,
        64,
    )
    assert rows["text-only"]["question_images"] == []
    manifest = json.loads((out / "_manifest.json").read_text(encoding="utf-8"))
    assert manifest["identity"]["inputs"][0]["images_sha256"] is not None
    html = write_report([out], tmp_path / "report.html", ReportOptions(sample=10)).path.read_text("utf-8")
    assert f'src="data:image/png;base64,{base64.b64encode(image["thumbnail_png"]).decode()}"' in html
