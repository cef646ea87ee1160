"""Video data for Kinetics-style 3D-conv classification: lists, decoding, clips, transforms.

- :mod:`~gn_det.data.video.annotations`: Kinetics CSVs, PySlowFast lists, path,label CSVs.
- :mod:`~gn_det.data.video.decode`: PyAV reading with one-line :class:`VideoDecodeError`\\ s.
- :mod:`~gn_det.data.video.sampling`: which frames make a training or test clip.
- :mod:`~gn_det.data.video.transforms`: scale jitter, crops, flip, normalization.
- :mod:`~gn_det.data.video.dataset`: :class:`VideoClipDataset` keyed by ``(index, seed)``.
- :mod:`~gn_det.data.video.synthetic`: a synthetic motion set in the Kinetics layout.

The names are imported from their submodules on first use (:func:`~gn_det.utils.lazy.lazy_exports`):
the torch-free :mod:`~gn_det.data.video.list_formats` serves command-line parsers without torch.
"""

from gn_det.utils.lazy import lazy_exports

_EXPORTS = {
    ".annotations": ("AnnotationError", "VideoList", "VideoRecord", "detect_format", "find_kinetics_root",
                     "kinetics_split_files", "load_kinetics", "load_video_list", "write_video_list"),
    ".dataset": ("VideoClipDataset", "collate_video_samples"),
    ".decode": ("VideoDecodeError", "VideoInfo", "decode_clip", "decode_frames", "probe"),
    ".sampling": ("TooShortError", "required_frames", "test_clip_indices", "train_clip_indices"),
    ".synthetic": ("FLIP_LABEL_MAP", "MOTION_CLASSES", "ensure_synthetic_kinetics", "flip_label_map",
                   "generate_synthetic_kinetics", "write_video"),
    ".transforms": ("TestClipTransform", "TrainClipTransform"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
