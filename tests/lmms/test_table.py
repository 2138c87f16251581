"""`videoitg answer-table` (`videoitg.lmms.table`): results files in lmms-eval 0.7's layout (the keys its
evaluator writes: `config.model`, `config.model_args`, `results`, `n-samples`) read into one table per task, metric,
video-LLM, K and documents, a column per selection; a bar chart. Real lmms-eval results: tests/lmms/test_model.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from videoitg.commands.cli import main
from videoitg.errors import InputError
from videoitg.lmms.table import collect, markdown, model_args, read_rows


def _results(path: Path, model_args: str, values: dict[str, dict], docs: int = 10, model: str = "videoitg") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "results": values, "config": {"model": model, "model_args": model_args, "batch_size": "1"},
        "n-samples": {task: {"original": docs, "effective": docs} for task in values}}))
    return path


def _run(root: Path, name: str, args: str, acc: float, date: str = "2026-11-27T10-00-00.000001") -> Path:
    return _results(root / name / "shape-reader" / f"{date}_results.json",
                    f"output_dir=o/{name},answer_upstream=http://127.0.0.1:9/v1,answer_model=shape-reader,{args}",
                    {"mc": {"alias": "mc", "accuracy,none": acc, "accuracy_stderr,none": "N/A",
                            "accuracy_stderr_clt,none": 0.1}})


def test_model_args() -> None:
    assert model_args("a=1,answer_upstream=http://h:1/v1,top_k=8") == {
        "a": "1", "answer_upstream": "http://h:1/v1", "top_k": "8"}
    assert model_args({"top_k": 8}) == {"top_k": "8"}
    assert model_args(None) == {}


def test_one_line_per_k_and_a_column_per_selection(tmp_path: Path) -> None:
    for k, itg, uni in [(2, 0.6, 0.35), (8, 0.9, 0.7)]:
        _run(tmp_path, f"videoitg-{k}", f"top_k={k},selection=videoitg", itg)
        _run(tmp_path, f"uniform-{k}", f"top_k={k},selection=uniform", uni)
    rows = collect([tmp_path])
    assert markdown(rows) == (
        "| task | metric | video-LLM | K | docs | videoitg | uniform |\n|---|---|---|---|---|---|---|\n"
        "| mc | accuracy | shape-reader | 2 | 10 | 0.6 | 0.35 |\n"
        "| mc | accuracy | shape-reader | 8 | 10 | 0.9 | 0.7 |\n")


def test_the_later_run_counts_and_defaults_fill_in(tmp_path: Path) -> None:
    _run(tmp_path, "a", "top_k=4", 0.5, date="2026-11-27T10-00-00.000001")
    _run(tmp_path, "a", "top_k=4", 0.75, date="2026-11-27T11-00-00.000001")
    _results(tmp_path / "b" / "r_results.json", "answer_upstream=http://h:1/v1,selection=uniform",
             {"mc": {"accuracy,none": 0.25, "accuracy,strict": 0.5}}, docs=3)
    rows = collect([tmp_path / "a", tmp_path / "b" / "r_results.json"])
    got = sorted((r.selection, r.top_k, r.model, r.metric, r.docs, r.value) for r in rows)
    assert got == [("uniform", 32, "first model at http://h:1/v1", "accuracy", 3, 0.25),
                   ("uniform", 32, "first model at http://h:1/v1", "accuracy (strict)", 3, 0.5),
                   ("videoitg", 4, "shape-reader", "accuracy", 10, 0.75)]


def test_runs_that_did_not_answer_are_refused(tmp_path: Path) -> None:
    grounding = _results(tmp_path / "g_results.json", "output_dir=o,top_k=4", {"mc": {"accuracy,none": 0.0}})
    with pytest.raises(InputError, match="grounding-only run"):
        read_rows(grounding)
    other = _results(tmp_path / "o_results.json", "model=x", {"mc": {"accuracy,none": 0.5}}, model="openai")
    with pytest.raises(InputError, match="not --model videoitg"):
        read_rows(other)
    (tmp_path / "bad_results.json").write_text("{")
    with pytest.raises(InputError, match="not an lmms-eval results file"):
        read_rows(tmp_path / "bad_results.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no lmms-eval results file"):
        collect([tmp_path / "empty"])


def test_the_command_prints_and_writes_markdown_and_a_chart(tmp_path: Path, capsys) -> None:
    for k, itg, uni in [(2, 0.6, 0.35), (4, 0.7, 0.45)]:
        _run(tmp_path / "runs", f"videoitg-{k}", f"top_k={k},selection=videoitg", itg)
        _run(tmp_path / "runs", f"uniform-{k}", f"top_k={k},selection=uniform", uni)
    out = tmp_path / "table" / "t"
    assert main(["answer-table", str(tmp_path / "runs"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    md = (tmp_path / "table" / "t.md").read_text()
    assert md in printed and "| mc | accuracy | shape-reader | 4 | 10 | 0.7 | 0.45 |" in md
    with Image.open(tmp_path / "table" / "t.png") as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200
    assert main(["answer-table", str(tmp_path / "nowhere")]) == 2


def test_an_adaptive_selection_is_a_column_of_its_own_with_the_frames_it_used(tmp_path: Path) -> None:
    """A run with `coverage=` (or `min_score=`) is its own selection beside the fixed-K ones; each cell shows the
    frames sent per document, read from the run's records in its output_dir."""
    def run(name: str, args: str, acc: float, sent: list[int]) -> None:
        out = tmp_path / "out" / name
        (out / "mc").mkdir(parents=True)
        (out / "mc" / "results.jsonl").write_text("".join(
            json.dumps({"doc_id": i, "answer": {"frames": list(range(n)), "text": "A"}}) + "\n"
            for i, n in enumerate(sent)) + '{"doc_id": 9, "answer": {"fra')  # a torn last line is skipped
        _results(tmp_path / "runs" / name / "r_results.json",
                 f"output_dir={out},answer_upstream=http://h:1/v1,answer_model=m,{args}",
                 {"mc": {"accuracy,none": acc}}, docs=len(sent))
    run("fixed", "top_k=8", 0.75, [8, 8, 8, 8])
    run("adaptive", "top_k=8,coverage=0.90", 0.75, [2, 3, 8, 3])
    run("uniform", "top_k=8,selection=uniform", 0.5, [8, 8, 8, 8])
    rows = collect([tmp_path / "runs"])
    assert {r.selection: r.frames for r in rows} == {"videoitg": 8.0, "videoitg coverage=0.9": 4.0, "uniform": 8.0}
    assert markdown(rows) == (
        "| task | metric | video-LLM | K | docs | videoitg | videoitg coverage=0.9 | uniform |\n"
        "|---|---|---|---|---|---|---|---|\n"
        "| mc | accuracy | m | 8 | 4 | 0.75 (8 frames) | 0.75 (4 frames) | 0.5 (8 frames) |\n")
    with pytest.raises(InputError, match="coverage must be a number from 0 to 1"):
        _results(tmp_path / "bad" / "r_results.json", "answer_upstream=http://h:1/v1,coverage=2", {"mc": {}})
        collect([tmp_path / "bad"])
