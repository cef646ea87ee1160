"""Reading videos with PyAV: header facts (:func:`probe`) and chosen frames (:func:`decode_frames`).

Every file is opened with ``av.open(path, metadata_errors="ignore")``: a non-UTF-8 metadata tag
(a latin-1 title, common in real downloads) would otherwise make a good video fail to open.

Frame ``i`` is the ``i``-th frame the decoder returns (presentation order, counting from 0).
:func:`decode_frames` decodes sequentially from the start and stops after the last wanted frame:
Kinetics clips are 10 s (~300 frames), so this costs little and is exact for any file. When the
first wanted frame is at least ``seek_min_frame`` frames in, it first seeks to the keyframe before
it and numbers frames from their timestamps (``round((pts - start) * time_base * fps)``), which
is exact for constant-frame-rate files (``gn-det-prepare-videos`` writes those, with a short
keyframe interval so the seek lands close); if the timestamps do not allow it, it falls back to
decoding from the start.

Every failure raises :class:`VideoDecodeError` with a one-line reason and a ``kind``:
``missing``, ``not_a_file``, ``empty``, ``truncated`` (mp4/mov without its ``moov`` index: an
interrupted download), ``undecodable``, ``no_video_stream``, ``too_few_frames``.
Frames that decode without error but hold garbage are not detected.
"""

from __future__ import annotations

import os
import struct
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Callable, Sequence

import av
import numpy as np
import torch

__all__ = ["VideoDecodeError", "VideoInfo", "open_video", "probe", "decode_frames", "decode_clip",
           "DECODE_ERROR_KINDS"]

DECODE_ERROR_KINDS = ("missing", "not_a_file", "empty", "truncated", "undecodable", "no_video_stream",
                      "too_few_frames")
_ISO_BMFF_EXT = (".mp4", ".m4v", ".mov", ".3gp", ".m4a")
_DEFAULT_SEEK_MIN_FRAME = 90  # ~3 s at 30 fps: below this, decoding from the start is as cheap


class VideoDecodeError(RuntimeError):
    """A video cannot be (fully) read: ``path``, one-line ``reason``, ``kind`` (see module doc).

    ``num_decoded`` is the number of frames actually decoded when the file held fewer frames than
    asked for (``kind == "too_few_frames"``), else None.
    """

    def __init__(self, path: str | os.PathLike, reason: str, kind: str = "undecodable",
                 num_decoded: int | None = None):
        self.path, self.reason, self.kind, self.num_decoded = str(path), reason, kind, num_decoded
        super().__init__(f"cannot read video {self.path}: {reason}")

    def __reduce__(self):  # picklable across DataLoader / process-pool workers
        return (type(self), (self.path, self.reason, self.kind, self.num_decoded))


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header (or a full decode) says.

    Attributes:
        num_frames: frame count (header, else duration x fps; decoded count with ``count_frames``).
        fps: average frame rate (0.0 if unknown).
        duration: seconds (0.0 if unknown).
        width, height: frame size in pixels.
        codec: decoder name (``h264``, ``mpeg4``, ...).
        frames_counted: True when ``num_frames`` was counted by decoding every frame.
    """

    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    codec: str
    frames_counted: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def _short(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def _iso_bmff_boxes(path: str, limit: int = 64) -> list[str]:
    """Types of the top-level boxes of an mp4/mov file (stops at ``limit`` boxes or the end)."""
    types: list[str] = []
    size_total = os.path.getsize(path)
    with open(path, "rb") as f:
        offset = 0
        while offset + 8 <= size_total and len(types) < limit:
            f.seek(offset)
            size, kind = struct.unpack(">I4s", f.read(8))
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0]
            elif size == 0:
                size = size_total - offset
            types.append(kind.decode("latin-1"))
            if size < 8:
                break
            offset += size
    return types


def _open_failure(path: str, e: BaseException) -> VideoDecodeError:
    if path.lower().endswith(_ISO_BMFF_EXT):
        try:
            boxes = _iso_bmff_boxes(path)
        except (OSError, struct.error):
            boxes = []
        if boxes and boxes[0] == "ftyp" and "moov" not in boxes:
            return VideoDecodeError(path, "moov atom not found: the file is truncated (an interrupted "
                                          "download or recording); re-download or re-encode it", "truncated")
    return VideoDecodeError(path, f"not a readable video ({_short(e)}); the file is corrupt or not a "
                                  f"video: re-download or re-encode it", "undecodable")


def open_video(path: str | os.PathLike):
    """``(container, video stream)`` of ``path``; the caller closes the container.

    Raises:
        VideoDecodeError: missing, not a file, empty, truncated, unreadable, or no video stream.
    """
    path = str(path)
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found", "missing")
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "not a file", "not_a_file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "empty file (0 bytes); re-download it", "empty")
    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise _open_failure(path, e) from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise VideoDecodeError(path, f"no video stream (streams: {', '.join(kinds)})", "no_video_stream")
    return container, container.streams.video[0]


def _fps(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def _header_info(container, stream) -> VideoInfo:
    fps = _fps(stream)
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    num_frames = int(stream.frames or 0)
    if num_frames <= 0 and duration > 0 and fps > 0:
        num_frames = int(round(duration * fps))
    if duration <= 0 and num_frames > 0 and fps > 0:
        duration = num_frames / fps
    ctx = stream.codec_context
    return VideoInfo(num_frames, fps, duration, int(ctx.width or 0), int(ctx.height or 0), ctx.name)


def _set_threads(stream, threads: int) -> None:
    stream.codec_context.thread_count = max(int(threads), 0)


def probe(path: str | os.PathLike, *, count_frames: bool = False, threads: int = 1) -> VideoInfo:
    """Frame count, fps, duration, width, height and codec of ``path``.

    Args:
        count_frames: decode every frame and report the true count (slow, but proves the whole
            file decodes); otherwise the header's numbers.
        threads: decoder threads (1 suits DataLoader and process-pool workers).

    Raises:
        VideoDecodeError: the file cannot be opened, or (``count_frames``) decoding fails.
    """
    path = str(path)
    container, stream = open_video(path)
    with container:
        info = _header_info(container, stream)
        if not count_frames:
            return info
        _set_threads(stream, threads)
        n = 0
        try:
            for _ in container.decode(stream):
                n += 1
        except (av.FFmpegError, ValueError, OSError) as e:
            raise VideoDecodeError(path, f"decoding failed after {n} frames ({_short(e)}); the file is "
                                         f"truncated or corrupt: re-download or re-encode it") from None
        if n == 0:
            raise VideoDecodeError(path, "no frame could be decoded", "too_few_frames", 0)
        duration = info.duration if info.duration > 0 else (n / info.fps if info.fps else 0.0)
        return VideoInfo(n, info.fps, duration, info.width, info.height, info.codec, True)


def _frame_index_from_pts(frame, stream, fps: float) -> int | None:
    if frame.pts is None or not stream.time_base or fps <= 0:
        return None
    start = stream.start_time or 0
    return int(round(float((frame.pts - start) * stream.time_base) * fps))


def _decode_wanted(container, stream, path: str, wanted: set[int], last: int, fps: float,
                   seek_min_frame: int | None) -> tuple[dict[int, np.ndarray], int]:
    """Decoded RGB frames of ``wanted`` and the number of frames decoded (sequential count)."""
    got: dict[int, np.ndarray] = {}
    first = min(wanted)
    counter = 0
    frames = container.decode(stream)
    if seek_min_frame is not None and first >= seek_min_frame and fps > 0 and stream.time_base:
        target = (stream.start_time or 0) + int(Fraction(first) / Fraction(fps).limit_denominator(1001)
                                                / stream.time_base)
        try:
            container.seek(target, stream=stream, backward=True, any_frame=False)
            frames = container.decode(stream)
            head = next(frames, None)
            index = _frame_index_from_pts(head, stream, fps) if head is not None else None
            if head is None or index is None or index > first or index < 0:
                raise LookupError  # no usable timestamp, or landed past the target: start over
            if index in wanted:
                got[index] = head.to_ndarray(format="rgb24")
            counter = index + 1
        except (LookupError, av.FFmpegError):
            container.seek(0, stream=stream, backward=True, any_frame=False)
            frames, counter = container.decode(stream), 0
            got.clear()
    if counter > last:
        return got, counter
    try:
        for frame in frames:
            if counter in wanted:
                got[counter] = frame.to_ndarray(format="rgb24")
            counter += 1
            if counter > last:
                break
    except (av.FFmpegError, ValueError, OSError) as e:
        if counter <= last:
            raise VideoDecodeError(path, f"decoding failed at frame {counter} ({_short(e)}); the file is "
                                         f"truncated or corrupt: re-download or re-encode it") from None
    return got, counter


def decode_frames(path: str | os.PathLike, indices: Sequence[int], *, threads: int = 1,
                  seek_min_frame: int | None = _DEFAULT_SEEK_MIN_FRAME) -> torch.Tensor:
    """Frames ``indices`` (any order, repeats allowed) of ``path`` as uint8 ``(T, H, W, 3)`` RGB.

    Args:
        indices: frame numbers (see the module docstring for how frames are numbered).
        threads: decoder threads (1 suits DataLoader workers).
        seek_min_frame: seek first when the earliest wanted frame is at least this far in
            (None: always decode from the start).

    Raises:
        VideoDecodeError: the file cannot be opened or decoded, or holds fewer frames than the
            largest index (``kind="too_few_frames"``, ``num_decoded`` set).
    """
    path = str(path)
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("decode_frames needs at least one frame index")
    if min(indices) < 0:
        raise ValueError(f"frame indices must be >= 0, got {min(indices)}")
    container, stream = open_video(path)
    with container:
        _set_threads(stream, threads)
        info = _header_info(container, stream)
        last = max(indices)
        got, counted = _decode_wanted(container, stream, path, set(indices), last, info.fps, seek_min_frame)
    missing = [i for i in indices if i not in got]
    if missing:
        raise VideoDecodeError(
            path, f"has only {counted} decodable frames but frame {max(missing)} was asked for "
                  f"(header says {info.num_frames})", "too_few_frames", counted)
    return torch.from_numpy(np.stack([got[i] for i in indices]))


def decode_clip(path: str | os.PathLike, choose: Callable[[int], Sequence[int]], *, threads: int = 1,
                seek_min_frame: int | None = _DEFAULT_SEEK_MIN_FRAME) -> tuple[torch.Tensor, list[int], VideoInfo]:
    """Frames ``choose(num_frames)`` of ``path``, with the header's frame count.

    When the header over-counts (the file decodes fewer frames than it says, as truncated or
    odd files do), ``choose`` is called once more with the true count and the clip is decoded
    again, so a slightly wrong header does not cost the video.

    Returns:
        (uint8 frames (T, H, W, 3), the indices used, the header info).

    Raises:
        VideoDecodeError: as :func:`decode_frames`; whatever ``choose`` raises (e.g. a
            :class:`~gn_det.data.video.sampling.TooShortError`) propagates.
    """
    info = probe(path)
    if info.num_frames <= 0:  # neither a frame count nor a duration in the header: count them
        info = probe(path, count_frames=True, threads=threads)
    indices = [int(i) for i in choose(info.num_frames)]
    try:
        return decode_frames(path, indices, threads=threads, seek_min_frame=seek_min_frame), indices, info
    except VideoDecodeError as e:
        if e.kind != "too_few_frames" or not e.num_decoded:
            raise
        indices = [int(i) for i in choose(e.num_decoded)]
        return decode_frames(path, indices, threads=threads, seek_min_frame=seek_min_frame), indices, info
