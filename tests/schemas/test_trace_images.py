"""Images in a trace's question: chat image parts read into bytes, identity by the bytes,
limits and errors that name the part."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from mig_annotator.schemas import Trace
from mig_annotator.schemas.trace_images import ImageLimits
from mig_annotator.service.annotation_service import trace_sha256
from tests.vision_support import clevr_scene, image_question, png_header


def _trace(question, **context) -> Trace:
    row = {"id": "t", "question": question, "steps": ["Count the shapes."], "reference_answer": "3"}
    return Trace.model_validate(row, context=context or None)


def _error(question, **context) -> str:
    with pytest.raises(ValidationError) as caught:
        _trace(question, **context)
    return str(caught.value.errors()[0]["msg"])


def test_an_image_part_becomes_the_bytes_of_the_image_and_the_text_parts_the_question() -> None:
    scene = clevr_scene(0)
    trace = _trace(image_question("How many shapes?", scene))
    assert trace.question == "How many shapes?"
    (image,) = trace.images
    assert image.data == scene
    assert (image.width, image.height, image.format) == (96, 64, "PNG")


@pytest.mark.parametrize(
    "part",
    [
        lambda path, data: {"type": "image", "image": str(path)},
        lambda path, data: {"type": "image", "path": path.name},
        lambda path, data: {"type": "image", "image": "data:image/png;base64," + data},
        lambda path, data: {"type": "image_url", "image_url": {"url": "data:image/png;base64," + data}},
        lambda path, data: {"type": "image", "base64": data},
    ],
    ids=["absolute-path", "relative-path", "data-url", "openai-image-url", "base64"],
)
def test_every_accepted_form_of_an_image_part_reads_the_same_bytes(tmp_path: Path, part) -> None:
    scene = clevr_scene(1)
    path = tmp_path / "scene.png"
    path.write_bytes(scene)
    question = [{"role": "user", "content": [part(path, base64.b64encode(scene).decode()), {"text": "Q?"}]}]
    assert _trace(question, image_base_dir=tmp_path).images[0].data == scene


def test_the_trace_digest_covers_the_image_bytes_never_the_path(tmp_path: Path) -> None:
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(clevr_scene(2))
    second.write_bytes(clevr_scene(2))
    same_bytes = [trace_sha256(_trace(image_question("Q?", str(path)))) for path in (first, second)]
    assert same_bytes[0] == same_bytes[1]
    before = same_bytes[0]
    first.write_bytes(clevr_scene(3))  # same path, other pixels
    assert trace_sha256(_trace(image_question("Q?", str(first)))) != before
    assert trace_sha256(_trace("Q?")) != before  # the text alone is another trace


def test_a_trace_with_images_round_trips_through_json() -> None:
    trace = _trace(image_question("How many?", clevr_scene(4)))
    assert Trace.model_validate_json(trace.model_dump_json()) == trace
    assert Trace.model_validate(trace.model_dump()) == trace


def test_a_missing_file_is_named_by_its_part(tmp_path: Path) -> None:
    question = [
        {"role": "user", "content": [{"type": "text", "text": "Q?"}, {"type": "image", "image": "x.png"}]}
    ]
    message = _error(question, image_base_dir=tmp_path)
    assert message == f"question[0].content[1].image: no such file {str(tmp_path / 'x.png')!r}"


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({"max_images": 1}, "question: 2 images, over the limit of 1 per question"),
        ({"max_image_bytes": 100}, "question[0].content[0].image: "),
        (
            {"max_image_pixels": 1000},
            "question[0].content[0].image: 96x64 = 6144 pixels, over the limit of 1000",
        ),
    ],
)
def test_the_configured_limits_refuse_what_is_over_them(limits: dict, expected: str) -> None:
    part = {"type": "image", "base64": base64.b64encode(clevr_scene(5)).decode()}
    question = [{"role": "user", "content": [part, part, {"type": "text", "text": "Q?"}]}]
    message = _error(question, image_limits=ImageLimits(**limits))
    assert message.startswith(expected)
    if "max_image_bytes" in limits:
        assert "over the limit of 100 bytes per image" in message


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        ({"type": "image", "image": "https://example.org/a.png"}, "remote image URLs are not fetched"),
        ({"type": "image", "base64": "not base64!"}, "not valid base64 data"),
        (
            {"type": "image", "base64": base64.b64encode(b"plain text").decode()},
            "not an image Pillow can read",
        ),
        ({"type": "image"}, "an image part needs exactly one of image, path, url, base64; got 0"),
    ],
)
def test_bad_image_parts_are_refused_with_the_reason(part: dict, expected: str) -> None:
    message = _error([{"role": "user", "content": [part, {"type": "text", "text": "Q?"}]}])
    assert message.startswith("question[0].content[0].image: ")
    assert expected in message


def test_a_caller_that_reads_no_local_files_refuses_paths(tmp_path: Path) -> None:
    path = tmp_path / "scene.png"
    path.write_bytes(clevr_scene(6))
    message = _error(image_question("Q?", str(path)), allow_image_paths=False)
    assert message == (
        "question[0].content[0].image: image paths are not read here: give the data (base64 or a data: URL)"
    )


def test_an_image_in_the_completion_is_refused() -> None:
    part = {"type": "image", "base64": base64.b64encode(clevr_scene(7)).decode()}
    with pytest.raises(ValidationError, match="images are read only in the question"):
        Trace(
            id="t",
            question="Q?",
            completion=[{"role": "assistant", "content": [part, {"type": "text", "text": "It is 3."}]}],
            reference_answer="3",
        )


def test_an_image_given_directly_must_carry_the_digest_of_its_bytes() -> None:
    trace = _trace(image_question("How many?", clevr_scene(8)))
    dumped = trace.model_dump()
    dumped["images"][0]["sha256"] = "0" * 64
    with pytest.raises(ValidationError, match="sha256 is not the sha256 of data"):
        Trace.model_validate(dumped)


def test_images_given_directly_are_held_to_the_limits() -> None:
    trace = _trace(image_question("How many?", clevr_scene(9)))
    dumped = trace.model_dump(mode="json")
    dumped["images"] = dumped["images"] * 3
    with pytest.raises(ValidationError, match="images: 3 images, over the limit of 2 per question"):
        Trace.model_validate(dumped, context={"image_limits": ImageLimits(max_images=2)})


def test_the_python_client_sends_the_images_as_data_and_no_key_for_a_text_trace() -> None:
    from mig_annotator.client.request_plan import trace_json

    with_image = _trace(image_question("How many?", clevr_scene(10)))
    sent = trace_json(with_image)
    assert Trace.model_validate_json(json.dumps(sent), context={"allow_image_paths": False}) == with_image
    assert "images" not in trace_json(_trace("How many?"))


@pytest.mark.parametrize("part_type", [{}, [], 3, None])
def test_a_content_part_whose_type_is_not_a_string_is_no_image_and_no_crash(part_type) -> None:
    """The OpenAPI fuzzer sent ``{"type": {...}}`` parts: a TypeError (unhashable) became a 500."""
    question = [{"role": "user", "content": [{"type": part_type, "text": "x"}]}]
    trace = _trace(question)
    assert trace.images == () and trace.question == "x"


def test_a_decompression_bomb_is_refused_naming_its_part_and_the_pixel_limit() -> None:
    """A 50,000 x 50,000 header: Pillow's DecompressionBombError escaped as a 500."""
    message = _error(image_question("How many?", png_header(50_000, 50_000)))
    assert message.startswith("question[0].content[0].image: over the limit of 16777216 pixels per image")
    assert "decompression bomb" in message


@pytest.mark.parametrize("form", ["python", "json"])
def test_an_image_given_directly_is_measured_from_its_bytes_never_its_declared_size(form: str) -> None:
    """A 12,000 x 12,000 PNG declared 1 x 1 was accepted: the pixel limit holds for what the bytes hold."""
    data = png_header(12_000, 12_000)
    image = {
        "data": base64.b64encode(data).decode(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "format": "PNG",
        "width": 1,
        "height": 1,
    }
    row = {"id": "t", "question": "Q?", "steps": ["Look."], "reference_answer": "3", "images": [image]}
    with pytest.raises(ValidationError) as caught:
        if form == "json":
            Trace.model_validate_json(json.dumps(row))
        else:
            Trace.model_validate(row)
    assert caught.value.errors()[0]["msg"] == (
        "images[0]: 12000x12000 = 144000000 pixels, over the limit of 16777216 per image"
    )


def test_an_image_given_directly_with_a_false_size_within_the_limits_is_refused() -> None:
    dumped = _trace(image_question("How many?", clevr_scene(11))).model_dump(mode="json")
    dumped["images"][0] |= {"width": 1, "height": 1}
    with pytest.raises(ValidationError) as caught:
        Trace.model_validate(dumped)
    assert caught.value.errors()[0]["msg"] == "images[0]: declares 1x1 PNG, but its data is a 96x64 PNG image"
