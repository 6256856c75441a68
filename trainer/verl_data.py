"""Question/answer JSONL into verl's training parquet, with the fields the MIG reward loop reads.

    python -m mig_annotator.trainer.verl_data gsm8k_train.jsonl ~/data/gsm8k/train.parquet
    python -m mig_annotator.trainer.verl_data math.jsonl math.parquet --format math --split test

Each output row is the shape of verl's own GSM8K preprocessing (``examples/data_preprocess/gsm8k.py``):
``data_source``; ``prompt``, one chat user turn (the question, a space, ``--instruction``);
``ability``; ``reward_model`` = ``{"style": "rule", "ground_truth": <the reference answer>}``; and
``extra_info`` = ``{"split", "index", "question", "answer"}``. The reward loop sends
``extra_info.question`` (the question without the instruction) to the service as the trace's question and
``reward_model.ground_truth`` as its reference answer.

Input formats (``--format``, default ``auto``: told apart by the first row's keys):

* ``gsm8k``: ``question`` and ``answer`` ending ``#### N`` (Hugging Face's openai/gsm8k); a row with a
  ``solution`` ending ``#### N`` and a plain ``answer`` (the shared ``gsm8k_test.jsonl``) also reads;
* ``math``: ``problem`` and ``solution`` whose last ``\\boxed{..}`` is the answer (or an ``answer`` field);
* ``rollouts``: the shared rollouts (``question_id``, ``question``, ``reference_answer``): one row per
  question, the first of its completions;
* ``plain``: ``question`` (or ``prompt``) and ``answer`` as they are.

A row without what its format needs fails naming the file, line and field. Needs pyarrow (verl's venv
has it). Nothing else in the package imports this module.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = ["DEFAULT_INSTRUCTION", "DataFormatError", "InputFormat", "convert", "detect_format", "verl_rows"]

InputFormat = Literal["auto", "gsm8k", "math", "rollouts", "plain"]
DEFAULT_INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'


class DataFormatError(ValueError):
    """An input row does not have what its format needs; the message names the file, line and field."""


def detect_format(row: Mapping[str, Any]) -> InputFormat:
    """The format of a row, from its keys."""
    if "reference_answer" in row and "question" in row:
        return "rollouts"
    if "problem" in row:
        return "math"
    if "question" in row and ("####" in str(row.get("answer", "")) or "####" in str(row.get("solution", ""))):
        return "gsm8k"
    return "plain"


def verl_rows(
    path: Path,
    input_format: InputFormat = "auto",
    *,
    instruction: str = DEFAULT_INSTRUCTION,
    data_source: str | None = None,
    split: str = "train",
) -> list[dict[str, Any]]:
    """The verl rows of the JSONL file at ``path`` (see the module)."""
    rows = list(_read_jsonl(path))
    if not rows:
        raise DataFormatError(f"{path}: no rows")
    chosen = detect_format(rows[0][1]) if input_format == "auto" else input_format
    read = READERS[chosen]
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for line, row in rows:
        where = f"{path}:{line}"
        if chosen == "rollouts":
            key = str(_field(row, "question_id", where))
            if key in seen:
                continue
            seen.add(key)
        question, ground_truth, raw_answer = read(row, where)
        prompt = f"{question} {instruction}".strip() if instruction else question
        out.append(
            {
                "data_source": data_source or SOURCES[chosen],
                "prompt": [{"role": "user", "content": prompt}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": ground_truth},
                "extra_info": {"split": split, "index": len(out), "question": question, "answer": raw_answer},
            }
        )
    return out


def convert(source: Path, target: Path, input_format: InputFormat = "auto", **options: Any) -> int:
    """Write ``source``'s verl rows to the parquet file ``target``; the number of rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = verl_rows(source, input_format, **options)
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), target)
    return len(rows)


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(f"{path}:{line_number}: not JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise DataFormatError(f"{path}:{line_number}: a row must be a JSON object")
            yield line_number, row


def _field(row: Mapping[str, Any], name: str, where: str) -> Any:
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataFormatError(f"{where}: no {name!r} (keys: {', '.join(sorted(row))})")
    return value


def _after_hashes(text: str) -> str | None:
    if "####" not in text:
        return None
    return text.rsplit("####", 1)[1].strip().replace(",", "") or None


def _gsm8k(row: Mapping[str, Any], where: str) -> tuple[str, str, str]:
    question = str(_field(row, "question", where))
    answer = str(_field(row, "answer", where))
    final = _after_hashes(answer)
    if final is not None:
        return question, final, answer
    solution = str(row.get("solution") or "")
    if _after_hashes(solution) is None:
        raise DataFormatError(f"{where}: 'answer' has no '#### N' final answer, and no 'solution' has one")
    return question, answer.strip().replace(",", ""), solution


def _math(row: Mapping[str, Any], where: str) -> tuple[str, str, str]:
    problem = str(_field(row, "problem", where))
    solution = str(row.get("solution") or "")
    answer = row.get("answer")
    final = str(answer).strip() if answer not in (None, "") else _last_boxed(solution)
    if not final:
        raise DataFormatError(f"{where}: no 'answer' and no \\boxed{{..}} in 'solution'")
    return problem, final, solution or final


def _rollouts(row: Mapping[str, Any], where: str) -> tuple[str, str, str]:
    reference = str(_field(row, "reference_answer", where))
    return str(_field(row, "question", where)), reference, reference


def _plain(row: Mapping[str, Any], where: str) -> tuple[str, str, str]:
    question = row.get("question") or row.get("prompt")
    if not question:
        raise DataFormatError(f"{where}: no 'question' or 'prompt' (keys: {', '.join(sorted(row))})")
    answer = str(_field(row, "answer", where))
    return str(question), answer, answer


def _last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{..}`` of ``text`` (nested braces matched), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    opening = text.find("{", start)
    if opening < 0:
        return None
    depth = 0
    for index in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[opening + 1 : index].strip() or None
    return None


READERS: dict[str, Callable[[Mapping[str, Any], str], tuple[str, str, str]]] = {
    "gsm8k": _gsm8k,
    "math": _math,
    "rollouts": _rollouts,
    "plain": _plain,
}
SOURCES = {"gsm8k": "openai/gsm8k", "math": "math", "rollouts": "openai/gsm8k", "plain": "mig"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mig_annotator.trainer.verl_data",
        description="Question/answer JSONL into verl's parquet with the fields the MIG reward loop reads.",
    )
    parser.add_argument("source", type=Path, help="the JSONL file")
    parser.add_argument("target", type=Path, help="the parquet file to write")
    parser.add_argument("--format", default="auto", choices=["auto", *READERS], dest="input_format")
    parser.add_argument("--instruction", default=DEFAULT_INSTRUCTION, help="appended to each question")
    parser.add_argument("--data-source", default=None, help="the data_source column (default: by format)")
    parser.add_argument("--split", default="train", help="extra_info.split")
    args = parser.parse_args(argv)
    try:
        count = convert(
            args.source,
            args.target,
            args.input_format,
            instruction=args.instruction,
            data_source=args.data_source,
            split=args.split,
        )
    except (DataFormatError, OSError) as error:
        print(f"verl_data: {error}", file=sys.stderr)
        return 2
    print(f"wrote {count} rows to {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
