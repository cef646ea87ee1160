"""PyAV decoding: frames come back as written; every broken file is one clear VideoDecodeError."""

import pickle

import av
import numpy as np
import pytest
import torch

from gn_det.data.video import decode
from gn_det.data.video.decode import VideoDecodeError, VideoInfo, decode_clip, decode_frames, probe
from gn_det.data.video.synthetic import pick_encoder, write_video

H, W, N = 32, 48, 12


def colour(i: int) -> tuple[int, int, int]:
    return (20 * i, 200 - 15 * i, 120)


def frames(n: int = N) -> np.ndarray:
    out = np.zeros((n, H, W, 3), np.uint8)
    for i in range(n):
        out[i] = colour(i)
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("dec") / "clip.mp4", frames(), fps=10, gop=4)


def assert_colours(clip, indices):
    means = clip.float().mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(means, [colour(i) for i in indices], atol=6)  # lossy codec


def test_decode_returns_the_frames_written(video):
    clip = decode_frames(video, [0, 5, 5, 11, 2])
    assert clip.dtype == torch.uint8 and tuple(clip.shape) == (5, H, W, 3)
    assert_colours(clip, [0, 5, 5, 11, 2])


def test_seeking_gives_the_same_frames(video):
    seq = decode_frames(video, [6, 9, 11], seek_min_frame=None)
    sought = decode_frames(video, [6, 9, 11], seek_min_frame=1)
    assert np.array_equal(seq.numpy(), sought.numpy())
    assert_colours(sought, [6, 9, 11])


def test_probe(video):
    info = probe(video)
    assert (info.num_frames, info.fps, info.width, info.height) == (N, 10.0, W, H)
    assert info.duration == pytest.approx(1.2) and not info.frames_counted
    assert info.codec in ("h264", "mpeg4")
    counted = probe(video, count_frames=True)
    assert counted.num_frames == N and counted.frames_counted


def test_too_few_frames(video):
    with pytest.raises(VideoDecodeError, match=r"has only 12 decodable frames but frame 12") as e:
        decode_frames(video, [3, 12])
    assert e.value.kind == "too_few_frames" and e.value.num_decoded == N


def test_decode_clip_retries_when_the_header_overcounts(video, monkeypatch):
    real = decode.probe
    monkeypatch.setattr(decode, "probe", lambda p, **k: VideoInfo(40, 10.0, 4.0, W, H, "h264"))
    seen = []

    def choose(n):
        seen.append(n)
        return [n - 1]

    clip, indices, _ = decode_clip(video, choose)
    assert seen == [40, N] and indices == [N - 1]
    assert_colours(clip, [N - 1])
    monkeypatch.setattr(decode, "probe", real)


def test_non_utf8_metadata_tag_does_not_fail_a_good_video(tmp_path):
    path = write_video(tmp_path / "latin1.mp4", frames(6), fps=10, metadata={"title": "caf\xe9 \xdcbung"},
                       metadata_encoding="latin-1")
    with pytest.raises(UnicodeDecodeError):  # the tag really is not UTF-8: a strict open fails
        av.open(str(path)).close()
    assert probe(path).num_frames == 6
    assert_colours(decode_frames(path, [1, 4]), [1, 4])


def one_line(e: VideoDecodeError, path) -> str:
    text = str(e)
    assert "\n" not in text and str(path) in text
    return text


def test_missing_and_empty(tmp_path):
    with pytest.raises(VideoDecodeError, match="file not found") as e:
        probe(tmp_path / "nope.mp4")
    assert e.value.kind == "missing"
    one_line(e.value, tmp_path / "nope.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match=r"empty file \(0 bytes\)") as e:
        decode_frames(empty, [0])
    assert e.value.kind == "empty"
    with pytest.raises(VideoDecodeError, match="not a file"):
        probe(tmp_path)


def test_truncated_mp4_says_moov_atom_not_found(video, tmp_path):
    data = video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match="moov atom not found") as e:
        decode_frames(cut, [0])
    assert e.value.kind == "truncated"
    one_line(e.value, cut)


def test_random_bytes(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(VideoDecodeError, match="not a readable video") as e:
        probe(junk)
    assert e.value.kind == "undecodable"
    one_line(e.value, junk)


def test_no_video_stream(tmp_path):
    path = tmp_path / "audio.m4a"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=8000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate = 8000
        c.mux(s.encode(f))
        c.mux(s.encode(None))
    with pytest.raises(VideoDecodeError, match=r"no video stream \(streams: audio\)") as e:
        decode_frames(path, [0])
    assert e.value.kind == "no_video_stream"


def test_error_is_picklable_for_worker_processes():
    e = VideoDecodeError("/x y.mp4", "empty file", "empty", None)
    back = pickle.loads(pickle.dumps(e))
    assert (back.path, back.reason, back.kind, str(back)) == (e.path, e.reason, e.kind, str(e))


def test_encoder_is_available():
    assert pick_encoder() in ("libx264", "mpeg4")
