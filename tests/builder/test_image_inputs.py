"""The builder's images column: paths relative to the input file, bytes, Hugging Face Image
structs; the input fingerprint covers the image files' bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from mig_annotator.builder.columns import resolve_mapping
from mig_annotator.builder.layout import OutputLayout
from mig_annotator.builder.pipeline import run_build
from mig_annotator.builder.rows import RowProblem, map_record
from mig_annotator.builder.sources import image_files_digest, resolve_inputs
from mig_annotator.schemas import Trace
from tests.builder.conftest import FAKE_IDENTITY, FakeProbe, make_plan
from tests.vision_support import clevr_scene, image_question, png_header

MAPPING = resolve_mapping("default")


def _row(images: object) -> dict[str, object]:
    return {
        "id": "r",
        "question": "How many?",
        "completion": "Two.",
        "reference_answer": "2",
        "images": images,
    }


def test_the_images_column_takes_paths_bytes_and_image_structs(tmp_path: Path) -> None:
    scene = clevr_scene(0)
    (tmp_path / "scene.png").write_bytes(scene)
    for value in ("scene.png", scene, {"bytes": scene, "path": None}, {"bytes": None, "path": "scene.png"}):
        trace = map_record(_row([value]), MAPPING, 0, True, image_base_dir=str(tmp_path))
        assert isinstance(trace, Trace), trace
        assert [image.data for image in trace.images] == [scene]
        assert trace.question == "How many?"


def test_the_images_column_joins_a_chat_questions_user_turn(tmp_path: Path) -> None:
    row = _row(clevr_scene(1)) | {
        "question": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How many?"}]
    }
    trace = map_record(row, MAPPING, 0, True)
    assert isinstance(trace, Trace) and len(trace.images) == 1 and trace.question == "How many?"


def test_a_bad_images_value_is_named_by_its_column() -> None:
    problem = map_record(_row([3]), MAPPING, 0, True)
    assert problem == RowProblem(
        "mapping", "question", "column 'images': [0]: holds int, expected a path, bytes or {bytes, path}"
    )


def test_a_row_without_images_is_a_text_trace() -> None:
    trace = map_record(_row(None), MAPPING, 0, True)
    assert isinstance(trace, Trace) and trace.images == ()


def test_the_input_fingerprint_covers_the_bytes_of_the_image_files(tmp_path: Path) -> None:
    (tmp_path / "scene.png").write_bytes(clevr_scene(2))
    source = tmp_path / "rows.jsonl"
    source.write_text(json.dumps(_row(["scene.png"])) + "\n", encoding="utf-8")
    [input_file] = resolve_inputs([source])
    before = image_files_digest(input_file, "images", "question")
    assert before is not None
    (tmp_path / "scene.png").write_bytes(clevr_scene(3))  # the same rows file, other pixels
    assert image_files_digest(input_file, "images", "question") not in (None, before)
    assert image_files_digest(input_file, "no_such_column", "question") is None


def test_the_input_fingerprint_covers_image_paths_in_the_questions_chat_parts(tmp_path: Path) -> None:
    (tmp_path / "scene.png").write_bytes(clevr_scene(4))
    source = tmp_path / "rows.jsonl"
    row = _row(None) | {"question": image_question("How many?", "scene.png")}
    source.write_text(json.dumps(row) + "\n", encoding="utf-8")
    [input_file] = resolve_inputs([source])
    before = image_files_digest(input_file, "images", "question")
    (tmp_path / "scene.png").write_bytes(clevr_scene(5))
    assert before is not None and image_files_digest(input_file, "images", "question") != before


def test_pseudo_files_in_the_images_column_are_the_rows_rejects_and_the_build_finishes(
    tmp_path: Path,
) -> None:
    """/proc/self/mem crashed planning (EIO) and /proc/self/pagemap was hashed for minutes: only regular,
    non-empty files within the byte limit are read, and never past the limit."""
    rows = [_row(path) | {"id": f"r{i}"} for i, path in enumerate(["/proc/self/mem", "/proc/self/pagemap"])]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    plan = make_plan(FAKE_IDENTITY, [source], tmp_path / "out")
    assert plan.identity.inputs[0].images_sha256 is None
    manifest = run_build(plan, FakeProbe()).manifest
    assert manifest.counts is not None and (manifest.counts.annotated, manifest.counts.rejected) == (0, 2)
    reasons = [r["reason"] for r in pq.read_table(OutputLayout(tmp_path / "out").rejects).to_pylist()]
    assert reasons == [
        f"trace: question[0].content[0].image: '{path}' is empty (or a pseudo-file whose size is unknown)"
        for path in ("/proc/self/mem", "/proc/self/pagemap")
    ]


def test_a_reject_reason_for_bytes_that_are_no_image_is_reproducible() -> None:
    """Pillow's message held the buffer's memory address (<_io.BytesIO object at 0x...>)."""
    problem = map_record(_row([b"not an image"]), MAPPING, 0, True)
    assert problem == RowProblem(
        "validation",
        None,
        "trace: question[0].content[0].image: not an image Pillow can read (no image format recognised)",
    )


def test_a_decompression_bomb_in_the_images_column_is_the_rows_problem_naming_the_pixel_limit() -> None:
    """`build --images-col` exited 1 on such a row, every run: now the row is a reject."""
    problem = map_record(_row([png_header(50_000, 50_000)]), MAPPING, 0, True)
    assert isinstance(problem, RowProblem) and problem.stage == "validation"
    assert problem.reason.startswith(
        "trace: question[0].content[0].image: over the limit of 16777216 pixels per image"
    )
