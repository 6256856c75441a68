"""The builder's images column: paths relative to the input file, bytes, Hugging Face Image
structs; the input fingerprint covers the image files' bytes."""

from __future__ import annotations

import json
from pathlib import Path

from mig_annotator.builder.columns import resolve_mapping
from mig_annotator.builder.rows import RowProblem, map_record
from mig_annotator.builder.sources import image_files_digest, resolve_inputs
from mig_annotator.schemas import Trace
from tests.vision_support import clevr_scene, image_question

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
