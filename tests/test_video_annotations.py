"""Video lists: Kinetics CSVs (official, Kinetics-400), PySlowFast lists, path,label CSVs."""

import os
from pathlib import Path

import pytest

from gn_det.data.video.annotations import (AnnotationError, VideoRecord, detect_format, find_kinetics_root,
                                           kinetics_split_files, load_kinetics, load_video_list,
                                           write_video_list)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


OFFICIAL = """label,youtube_id,time_start,time_end,split
arm wrestling,abc-123_XYZ,5,15,train
zumba,zzz,0,10,train
arm wrestling,def,30,40,train
"""


def test_official_csv_with_class_subfolders_with_spaces(tmp_path):
    root = tmp_path / "k700"
    a = touch(root / "train" / "arm wrestling" / "abc-123_XYZ_000005_000015.mp4")
    z = touch(root / "train" / "zumba" / "zzz_000000_000010.mp4")
    csv_path = write(root / "annotations" / "train.csv", OFFICIAL)
    records, classes = load_video_list(csv_path)
    assert classes == ["arm wrestling", "zumba"]
    assert records[0] == VideoRecord(str(a), "arm wrestling")
    assert records[1].path == str(z)
    assert [r.line for r in records] == [2, 3, 4]
    # The third video is missing: it keeps the class sub-folder path the layout suggests.
    assert records[2].path == str(root / "train" / "arm wrestling" / "def_000030_000040.mp4")
    vl = load_video_list(csv_path)
    assert vl.format == "kinetics" and vl.class_index()["zumba"] == 1


def test_official_csv_flat_layout_other_extensions_and_underscored_folders(tmp_path):
    root = tmp_path / "k600"
    flat = touch(root / "train" / "zzz_000000_000010.mkv")
    under = touch(root / "train" / "arm_wrestling" / "abc-123_XYZ_000005_000015.mp4")
    csv_path = write(root / "annotations" / "train.csv", OFFICIAL)
    records, _ = load_video_list(csv_path)
    assert records[0].path == str(under)
    assert records[1].path == str(flat)


def test_flat_layout_missing_file_gets_flat_path(tmp_path):
    root = tmp_path / "k"
    touch(root / "train" / "zzz_000000_000010.mp4")
    csv_path = write(root / "annotations" / "train.csv", OFFICIAL)
    records, _ = load_video_list(csv_path)
    assert records[2].path == str(root / "train" / "def_000030_000040.mp4")


@pytest.mark.parametrize("folder", ["val", "validate"])
def test_kinetics400_is_cc_and_validate_split(tmp_path, folder):
    root = tmp_path / "kinetics400"
    v = touch(root / folder / "abseiling" / "0wR5jVB-WPk_000417_000427.mp4")
    # Kinetics-400 column order, with is_cc, split named "validate", float times.
    csv_path = write(root / "annotations" / "validate.csv",
                     "label,youtube_id,time_start,time_end,split,is_cc\n"
                     "abseiling,0wR5jVB-WPk,417.0,427.0,validate,0\n")
    records, classes = load_video_list(csv_path)
    assert records == [VideoRecord(str(v), "abseiling")]
    assert classes == ["abseiling"]


def test_kinetics_split_filter_and_split_from_file_name(tmp_path):
    root = tmp_path / "k"
    both = write(root / "annotations" / "all.csv",
                 "youtube_id,label,time_start,time_end,split\nA,x,0,10,train\nB,y,0,10,val\n")
    records, classes = load_video_list(both, split="validate")
    assert [Path(r.path).name for r in records] == ["B_000000_000010.mp4"] and classes == ["y"]
    no_split = write(root / "annotations" / "val.csv", "label,youtube_id,time_start,time_end\nx,C,1,11\n")
    touch(root / "validate" / "x" / "C_000001_000011.mp4")
    assert load_video_list(no_split).records[0].path == str(root / "validate" / "x" / "C_000001_000011.mp4")


def test_kinetics_missing_columns_and_bad_rows(tmp_path):
    bad_header = write(tmp_path / "a.csv", "label,youtube_id,time_start,split\nx,A,0,train\n")
    with pytest.raises(AnnotationError, match=r"a\.csv:1: .*lacks the column\(s\) time_end"):
        load_video_list(bad_header)
    bad_row = write(tmp_path / "b.csv", "label,youtube_id,time_start,time_end,split\nx,A,0,10,train\n"
                                        "y,B,zero,10,train\nz,C\n")
    with pytest.raises(AnnotationError, match=r"b\.csv:3: time_start/time_end"):
        load_video_list(bad_row)
    vl = load_video_list(bad_row, errors="collect")
    assert [r.label for r in vl.records] == ["x"]
    assert [line for line, _ in vl.problems] == [3, 4]
    assert "2 fields" in vl.problems[1][1]


def test_list_format_paths_with_spaces(tmp_path):
    lst = write(tmp_path / "lists" / "train.csv",
                "videos/arm wrestling/a b.mp4 3\n\n/abs/path with  spaces.mp4 10  \nc.mp4 0\r\n")
    vl = load_video_list(lst)
    assert vl.format == "list"
    assert vl.records == [VideoRecord(str(tmp_path / "lists" / "videos/arm wrestling/a b.mp4"), "3"),
                          VideoRecord("/abs/path with  spaces.mp4", "10"),
                          VideoRecord(str(tmp_path / "lists" / "c.mp4"), "0")]
    # Integer labels are class indices already: classes 0..max, not sorted strings ("10" < "3").
    assert vl.classes == [str(i) for i in range(11)]
    assert vl.class_index()["10"] == 10
    assert [r.line for r in vl.records] == [1, 3, 4]


def test_list_format_other_separator_and_video_root(tmp_path):
    lst = write(tmp_path / "train.txt", "my videos/a, b.mp4,2\nc d.mp4,0\n")
    records, classes = load_video_list(lst, sep=",", video_root="/data")
    assert records[0] == VideoRecord("/data/my videos/a, b.mp4", "2")
    assert records[1] == VideoRecord("/data/c d.mp4", "0")
    assert classes == ["0", "1", "2"]


def test_list_format_bad_lines(tmp_path):
    lst = write(tmp_path / "train.csv", "a.mp4 1\nb.mp4 dog\nnolabel\nc.mp4\t4\n")
    with pytest.raises(AnnotationError, match=r"train\.csv:2: label 'dog' is not a non-negative integer"):
        load_video_list(lst)
    vl = load_video_list(lst, errors="collect")
    assert [r.label for r in vl.records] == ["1"]  # "c.mp4\t4": the tab is part of the path
    assert [line for line, _ in vl.problems] == [2, 3, 4]
    assert "pass sep='\\t'" in vl.problems[2][1]


def test_wrong_separator_hint(tmp_path):
    lst = write(tmp_path / "train.csv", "a.mp4,1\nb.mp4,2\n")
    with pytest.raises(AnnotationError, match=r"train\.csv:1: .*looks separated by ','"):
        load_video_list(lst)


def test_path_label_csv_quoted_fields(tmp_path):
    csv_path = write(tmp_path / "data" / "clips.csv",
                     'id,path,label\n1,"clips/a, b c.mp4","playing cello"\n2,clips/d.mp4,abseiling\n')
    vl = load_video_list(csv_path)
    assert vl.format == "csv"
    assert vl.records == [VideoRecord(str(tmp_path / "data" / "clips/a, b c.mp4"), "playing cello"),
                          VideoRecord(str(tmp_path / "data" / "clips/d.mp4"), "abseiling")]
    assert vl.classes == ["abseiling", "playing cello"]
    ints = write(tmp_path / "ints.csv", "path,label\na.mp4,2\nb.mp4,11\n")
    assert load_video_list(ints).classes == [str(i) for i in range(12)]


def test_path_label_csv_errors(tmp_path):
    missing = write(tmp_path / "a.csv", "path,class\nx.mp4,1\n")
    with pytest.raises(AnnotationError, match=r"a\.csv:1: .*lacks the column\(s\) label"):
        load_video_list(missing)
    bad = write(tmp_path / "b.csv", "path,label\nx.mp4,cat\ny.mp4\n,dog\n")
    with pytest.raises(AnnotationError, match=r"b\.csv:3: 1 fields where the header has 2"):
        load_video_list(bad)
    assert [p[0] for p in load_video_list(bad, errors="collect").problems] == [3, 4]


def test_empty_missing_and_header_only(tmp_path):
    with pytest.raises(AnnotationError, match="not found"):
        load_video_list(tmp_path / "nope.csv")
    with pytest.raises(AnnotationError, match=r"empty\.csv is empty"):
        load_video_list(write(tmp_path / "empty.csv", "\n  \n"))
    with pytest.raises(AnnotationError, match=r"header\.csv: no rows"):
        load_video_list(write(tmp_path / "header.csv", "label,youtube_id,time_start,time_end,split\n"))
    with pytest.raises(AnnotationError, match="cannot tell the list format"):
        load_video_list(write(tmp_path / "junk.csv", "hello world\n"))


def test_detect_and_explicit_format(tmp_path):
    k = write(tmp_path / "k.csv", OFFICIAL)
    lst = write(tmp_path / "l.csv", "a b.mp4 0\n")
    c = write(tmp_path / "c.csv", "label,path\nx,a.mp4\n")
    assert [detect_format(p) for p in (k, lst, c)] == ["kinetics", "list", "csv"]
    assert load_video_list(lst, format="list").format == "list"
    with pytest.raises(AnnotationError, match="unknown list format"):
        load_video_list(lst, format="yaml")


@pytest.mark.parametrize("text,name", [
    (OFFICIAL.replace("zumba,zzz", '"zumba, fast",zzz'), "k.csv"),
    ("a b.mp4 0\n\nc d.mp4 1\nbad line\n", "l.csv"),
    ('path,label\n"a, b.mp4",x\n"c d.mp4",y\n', "c.csv"),
])
def test_write_keeps_the_format(tmp_path, text, name):
    src = write(tmp_path / name, text)
    vl = load_video_list(src, errors="collect")
    out = write_video_list(vl, tmp_path / "out" / name, keep=[1])
    again = load_video_list(out, format=vl.format, video_root=tmp_path)
    assert [r.label for r in again.records] == [vl.records[1].label]
    assert Path(again.records[0].path).name == Path(vl.records[1].path).name
    if vl.format != "list":
        assert out.read_text().splitlines()[0] == text.splitlines()[0]


def test_kinetics_root_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("GN_DET_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"kinetics400/annotations/\{train,validate\|val,test\}\.csv"):
        find_kinetics_root("kinetics400")
    root = tmp_path / "kinetics400"
    write(root / "annotations" / "validate.csv", "label,youtube_id,time_start,time_end,split,is_cc\n"
                                                 "a b,X,0,10,validate,0\n")
    v = touch(root / "val" / "a b" / "X_000000_000010.mp4")
    assert find_kinetics_root("kinetics400") == root
    assert kinetics_split_files(root, "val") == (root / "annotations" / "validate.csv", root)
    with pytest.raises(FileNotFoundError, match="train"):
        kinetics_split_files(root, "train")
    vl = load_kinetics("kinetics400", "val")
    assert vl.records == [VideoRecord(str(v), "a b")]
    assert os.path.isfile(vl.records[0].path)
