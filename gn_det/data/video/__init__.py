"""Video data for Kinetics-style 3D-conv classification: lists, decoding, clips, transforms.

- :mod:`~gn_det.data.video.annotations`: Kinetics CSVs, PySlowFast lists, path,label CSVs.
- :mod:`~gn_det.data.video.decode`: PyAV reading with one-line :class:`VideoDecodeError`\\ s.
- :mod:`~gn_det.data.video.sampling`: which frames make a training or test clip.
- :mod:`~gn_det.data.video.transforms`: scale jitter, crops, flip, normalization.
- :mod:`~gn_det.data.video.dataset`: :class:`VideoClipDataset` keyed by ``(index, seed)``.
- :mod:`~gn_det.data.video.synthetic`: a synthetic motion set in the Kinetics layout.
"""

from gn_det.data.video.annotations import (  # noqa: F401
    AnnotationError,
    VideoList,
    VideoRecord,
    detect_format,
    find_kinetics_root,
    kinetics_split_files,
    load_kinetics,
    load_video_list,
    write_video_list,
)
from gn_det.data.video.dataset import VideoClipDataset, collate_video_samples  # noqa: F401
from gn_det.data.video.decode import VideoDecodeError, VideoInfo, decode_clip, decode_frames, probe  # noqa: F401
from gn_det.data.video.sampling import (  # noqa: F401
    TooShortError,
    required_frames,
    test_clip_indices,
    train_clip_indices,
)
from gn_det.data.video.synthetic import (  # noqa: F401
    FLIP_LABEL_MAP,
    MOTION_CLASSES,
    ensure_synthetic_kinetics,
    flip_label_map,
    generate_synthetic_kinetics,
    write_video,
)
from gn_det.data.video.transforms import TestClipTransform, TrainClipTransform  # noqa: F401
