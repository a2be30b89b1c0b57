"""The ``deepfake`` command, run as a real process (and in-process where only parsing is checked)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import COMMANDS, main
from deepfake.contracts.schemas import DetectionResult, FileError
from deepfake.settings import REPO_ROOT


def deepfake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, synth_videos, bad_inputs) -> Path:
    """A folder with two good videos, two bad ones and a non-video file that must be skipped."""
    folder = tmp_path_factory.mktemp("inputs")
    shutil.copy(synth_videos["pan"].path, folder / "a_pan.mp4")
    shutil.copy(synth_videos["none"].path, folder / "b_none.mp4")
    shutil.copy(bad_inputs["corrupt_video"], folder / "c_truncated.mp4")
    shutil.copy(bad_inputs["not_a_video"], folder / "d_random.mp4")
    (folder / "notes.txt").write_text("not a video, not even tried")
    return folder


def test_detect_json_lines_one_record_per_input_and_exit_1_on_failures(
    mixed_folder, random_model_path, default_detector
):
    run = deepfake("detect", str(mixed_folder), "--json", "--frames", "8", "--model", str(random_model_path))
    assert run.returncode == 1, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [Path(r["path"]).name for r in lines] == [
        "a_pan.mp4",
        "b_none.mp4",
        "c_truncated.mp4",
        "d_random.mp4",
    ]
    pan, none = DetectionResult.model_validate(lines[0]), DetectionResult.model_validate(lines[1])
    assert pan.verdict in ("fake", "real") and len(pan.tracks) == 1 and pan.timeline and pan.timings_ms
    assert none.verdict == "inconclusive" and none.warnings
    assert FileError.model_validate(lines[2]).error.code == "corrupt_video"
    assert FileError.model_validate(lines[3]).error.code == "not_a_video"


def test_detect_prints_a_summary_table_and_exit_0(synth_videos, random_model_path, default_detector):
    run = deepfake(
        "detect", str(synth_videos["two"].path), "--frames", "8", "--model", str(random_model_path)
    )
    assert run.returncode == 0, run.stderr
    header, row = run.stdout.splitlines()
    assert header.split() == ["path", "verdict", "score", "faces", "seconds", "note"]
    cells = row.split()
    assert cells[0].endswith("two.mp4") and cells[1] in ("fake", "real") and cells[3] == "2"


def test_missing_model_is_a_clear_error(synth_videos, tmp_path):
    run = deepfake("detect", str(synth_videos["pan"].path), "--model", str(tmp_path / "none.onnx"))
    assert run.returncode == 1
    assert "none.onnx" in run.stderr and "--model" in run.stderr and run.stdout == ""


def test_usage_errors_exit_2(synth_videos, random_model_path, capsys):
    video = str(synth_videos["pan"].path)
    assert main(["detect", video, "--model", str(random_model_path), "--detector", "nope"]) == 2
    assert "unknown face detector 'nope'" in capsys.readouterr().err
    assert main(["detect", video, "--frames", "0", "--model", str(random_model_path)]) == 2
    with pytest.raises(SystemExit) as parse_error:
        main(["detect"])
    assert parse_error.value.code == 2


def test_folder_without_videos_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "readme.txt").write_text("x")
    assert main(["detect", str(tmp_path)]) == 2
    assert "no video files" in capsys.readouterr().err


def test_faces_writes_crops_and_manifests(synth_videos, random_model_path, tmp_path, default_detector):
    out = tmp_path / "faces"
    run = deepfake(
        "faces",
        str(synth_videos["two"].path),
        "--out",
        str(out),
        "--frames",
        "8",
        "--model",
        str(random_model_path),
    )
    assert run.returncode == 0, run.stderr
    rows = (out / "manifest.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:2] == ["file", "track"]
    assert {row.split("\t")[1] for row in rows[1:]} == {"0", "1"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["crop_policy"]["size"] == 64 and len(manifest["tracks"]) == 2
    import cv2

    first = cv2.imread(str(out / rows[1].split("\t")[0]))
    assert first.shape == (64, 64, 3)
    assert len(list(out.glob("*.png"))) == len(rows) - 1


def test_faces_on_a_bad_file_prints_the_error(bad_inputs, tmp_path, random_model_path, default_detector):
    run = deepfake(
        "faces", str(bad_inputs["no_video_stream"]), "--out", str(tmp_path), "--model", str(random_model_path)
    )
    assert run.returncode == 1
    assert json.loads(run.stdout)["error"]["code"] == "no_video_stream"


def test_subcommands_are_registered_by_module_path():
    assert COMMANDS["detect"] == "cli.commands.detect"
    for module_path in COMMANDS.values():
        module = __import__(module_path, fromlist=["run"])
        assert callable(module.add_arguments) and callable(module.run) and module.HELP
