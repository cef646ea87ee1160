"""gn-det-check-videos finds every planted problem; gn-det-prepare-videos resizes and resumes."""

import json
import os

import numpy as np
import pytest

from gn_det.cli import check_videos, prepare_videos
from gn_det.data.video.annotations import load_video_list
from gn_det.data.video.decode import probe
from gn_det.data.video.synthetic import write_video


def video(path, n=8, h=32, w=48, fps=10):
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i] = (25 * i, 100, 200 - 20 * i)
    return write_video(path, frames, fps=fps, gop=4)


@pytest.fixture()
def kinetics(tmp_path):
    """A Kinetics-layout set with one of each problem; returns (csv path, {problem: youtube id})."""
    root = tmp_path / "kin"
    train = root / "train"
    ok1 = video(train / "arm wrestling" / "good1_000000_000010.mp4")
    video(train / "zumba" / "good2_000005_000015.mp4", n=10)
    video(train / "zumba" / "short_000000_000010.mp4", n=4)
    (train / "zumba" / "empty_000000_000010.mp4").write_bytes(b"")
    (train / "zumba" / "cut_000000_000010.mp4").write_bytes(ok1.read_bytes()[:400])
    (train / "zumba" / "junk_000000_000010.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    rows = ["label,youtube_id,time_start,time_end,split,is_cc",
            "arm wrestling,good1,0,10,train,0",
            "zumba,good2,5,15,train,0",
            "zumba,short,0,10,train,0",
            "zumba,empty,0,10,train,0",
            "zumba,cut,0,10,train,0",
            "zumba,junk,0,10,train,0",
            "zumba,gone,0,10,train,0",
            "zumba,broken,zero,10,train,0",
            "arm wrestling,good1,0,10,train,0"]
    csv_path = root / "annotations" / "train.csv"
    csv_path.parent.mkdir(parents=True)
    csv_path.write_text("\n".join(rows) + "\n")
    return csv_path


def test_check_finds_every_planted_problem(kinetics, tmp_path, capsys):
    out = tmp_path / "out"
    rc = check_videos.main([str(kinetics), "--num-frames", "3", "--sampling-rate", "2", "--workers", "2",
                            "--out-dir", str(out), "--no-progress"])
    assert rc == 1
    report = json.loads((out / "train.check.json").read_text())
    counts = {k: v for k, v in report["counts"].items() if v}
    assert counts == {"bad_line": 1, "duplicate": 1, "missing": 1, "empty": 1, "truncated": 1,
                      "undecodable": 1, "too_short": 1}
    by_line = {p["line"]: p for p in report["problems"]}
    assert by_line[4]["problem"] == "too_short" and "4 frames, a clip needs 5" in by_line[4]["reason"]
    assert "moov atom not found" in by_line[6]["reason"]
    assert by_line[8]["path"].endswith("gone_000000_000010.mp4")
    assert by_line[9]["problem"] == "bad_line" and by_line[10]["problem"] == "duplicate"
    assert report["num_good"] == 2 and report["good_videos"]["resolution"] == {"48x32": 2}
    assert report["good_videos"]["num_frames"] == {"min": 8, "median": 9.0, "max": 10}
    # The cleaned CSV: same header, only the good rows, loads as the same format.
    clean = out / "train.clean.csv"
    lines = clean.read_text().splitlines()
    assert lines[0] == "label,youtube_id,time_start,time_end,split,is_cc"
    assert lines[1:] == ["arm wrestling,good1,0,10,train,0", "zumba,good2,5,15,train,0"]
    cleaned = load_video_list(clean, video_root=kinetics.parent.parent)
    assert all(os.path.isfile(r.path) for r in cleaned.records)
    printed = capsys.readouterr().out
    assert "| truncated" in printed and "wrote" in printed and "48x32 (2)" in printed


def test_check_list_format_with_spaces_and_clean_run(tmp_path, capsys):
    video(tmp_path / "my videos" / "a b.mp4")
    video(tmp_path / "my videos" / "c d.mp4", n=6)
    lst = tmp_path / "train.csv"
    lst.write_text("my videos/a b.mp4 0\nmy videos/c d.mp4 1\nmy videos/e.mp4,1\n")
    args = [str(lst), "--num-frames", "2", "--sampling-rate", "2", "--out-dir", str(tmp_path / "o"),
            "--no-progress", "--workers", "0"]
    assert check_videos.main(args) == 1
    report = json.loads((tmp_path / "o" / "train.check.json").read_text())
    assert report["format"] == "list" and report["counts"]["bad_line"] == 1
    assert "looks separated by ','" in report["problems"][0]["reason"]
    clean = tmp_path / "o" / "train.clean.csv"
    assert clean.read_text() == "my videos/a b.mp4 0\nmy videos/c d.mp4 1\n"
    # The cleaned list checks clean (the process pool path, header-only reads).
    assert check_videos.main([str(clean), "--video-root", str(tmp_path), "--num-frames", "2", "--sampling-rate",
                              "2", "--out-dir", str(tmp_path / "o2"), "--no-progress", "--workers", "2",
                              "--executor", "process", "--quick"]) == 0


def test_check_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert check_videos.main([str(tmp_path / "nope.csv"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gn-det-check-videos: error: video list not found") and "\n" not in err
    bad = tmp_path / "bad.csv"
    bad.write_text("label,youtube_id,start\nx,y,1\n")
    assert check_videos.main([str(bad), "--no-progress"]) == 2
    assert "lacks the column(s) time_start, time_end" in capsys.readouterr().err
    assert check_videos.main([str(bad), "--num-frames", "0"]) == 2


def test_prepare_resizes_mirrors_and_resumes(tmp_path, capsys):
    src, dst = tmp_path / "raw", tmp_path / "prepared"
    video(src / "arm wrestling" / "clip one.mp4", n=10, h=32, w=48, fps=10)
    video(src / "zumba" / "tall.mkv", n=10, h=48, w=32, fps=20)
    (src / "zumba" / "broken.mp4").write_bytes(b"not a video")
    args = [str(src), str(dst), "--short-side", "16", "--fps", "10", "--gop", "4", "--workers", "0", "--no-progress"]
    assert prepare_videos.main(args) == 1  # one failure, listed, not fatal to the others
    printed = capsys.readouterr().out
    assert "2 encoded, 0 already done (skipped), 1 failed" in printed
    assert "broken.mp4: not a readable video" in printed
    one, tall = dst / "arm wrestling" / "clip one.mp4", dst / "zumba" / "tall.mp4"
    a, b = probe(one, count_frames=True), probe(tall, count_frames=True)
    assert (a.width, a.height, a.fps, a.num_frames) == (24, 16, 10.0, 10)
    assert (b.width, b.height, b.fps, b.num_frames) == (16, 24, 10.0, 5)  # 20 fps -> 10 fps: half the frames
    # A second run skips the finished files; a deleted output is made again.
    mtime = one.stat().st_mtime_ns
    tall.unlink()
    assert prepare_videos.main(args) == 1
    assert "1 encoded, 1 already done (skipped), 1 failed" in capsys.readouterr().out
    assert one.stat().st_mtime_ns == mtime and tall.is_file()
    assert not [p for p in dst.rglob(".*")]  # no temporary file left behind


def test_prepare_in_parallel_and_user_errors(tmp_path, capsys):
    src = tmp_path / "raw"
    for k in range(2):
        video(src / f"v {k}.mp4", n=6)
    assert prepare_videos.main([str(src), str(tmp_path / "out"), "--short-side", "16", "--workers", "2",
                                "--no-progress"]) == 0
    assert probe(tmp_path / "out" / "v 1.mp4").height == 16
    assert prepare_videos.main([str(src), str(src / "inside"), "--no-progress"]) == 2
    assert "must not be inside the input folder" in capsys.readouterr().err
    assert prepare_videos.main([str(src), str(tmp_path / "o"), "--short-side", "15"]) == 2
    assert prepare_videos.main([str(tmp_path / "nothing"), str(tmp_path / "o")]) == 2
