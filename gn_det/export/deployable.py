"""Tensor-in, tensor-out versions of gn_det's models, for tracing into TorchScript or ONNX.

gn_det's models read lists of sample dicts (the data loader's format); an exported program
reads plain tensors. Each wrapper here runs the model's own preprocessing and network on a
tensor and returns a tuple of tensors, so what is exported is what ``model.eval()`` computes:

==============  =========================================  =====================================
model           input (float32, RGB, 0-255)                outputs
==============  =========================================  =====================================
classifier      ``images`` (N, 3, H, W), resized and       ``logits`` (N, K)
                cropped as at test time
video (I3D)     ``clips`` (N, 3, T, H, W), frames sampled  ``logits`` (N, K) of each clip
                and cropped as at test time
detector        ``image`` (3, H, W), resized so its short  ``boxes`` (R, 4) xyxy, ``scores`` (R,),
                side is INPUT.MIN_SIZE_TEST (long side at  ``labels`` (R,) in 1..K, ``masks``
                most MAX_SIZE_TEST)                        (R, H, W) uint8 (with MODEL.MASK_ON)
==============  =========================================  =====================================

Inside the graph: the channel flip to BGR when the weights expect it (INPUT.FORMAT), the pixel
mean/std (MODEL.PIXEL_MEAN/STD; for video, ``x / 255`` then DATA.MEAN/STD), for video the
``rgb_diff`` modality, for the detector the padding to a multiple of 32, score threshold, NMS and
mask pasting. Outside (the caller's part): decoding, resizing and cropping; for video, averaging
the logits of a video's clips; for the detector, scaling boxes and masks back to the original image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from gn_det.modeling.classifier import ResNetClassifier
from gn_det.modeling.mask_rcnn import GNMaskRCNN, to_original_size
from gn_det.modeling.video_resnet import VideoClassifier

__all__ = ["DeployableClassifier", "DeployableVideo", "DeployableDetector", "ExportSpec", "export_spec"]


class DeployableClassifier(nn.Module):
    """``images (N, 3, H, W) RGB 0-255 -> logits (N, K)`` of a :class:`ResNetClassifier`."""

    def __init__(self, model: ResNetClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.resnet(self.model.normalize(images))


class DeployableVideo(nn.Module):
    """``clips (N, 3, T, H, W) RGB 0-255 -> logits (N, K)`` of a :class:`VideoClassifier`.

    The data loader normalizes clips (``(x / 255 - mean) / std``, DATA.MEAN/STD) before the model;
    here that step is part of the graph, with the config's mean and std.
    """

    def __init__(self, model: VideoClassifier, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", 255.0 * torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1, 1))
        self.register_buffer("std", 255.0 * torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1, 1))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        videos = self.model.network_input((clips - self.mean) / self.std)
        return self.model.head(self.model.resnet(videos))


class DeployableDetector(nn.Module):
    """``image (3, H, W) RGB 0-255 -> (boxes, scores, labels[, masks])`` of a :class:`GNMaskRCNN`,
    in the input image's pixels (masks pasted and thresholded at 0.5, as ``model.eval()`` returns)."""

    def __init__(self, model: GNMaskRCNN) -> None:
        super().__init__()
        self.model = model
        self.mask_on = bool(model.roi_heads.has_mask())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        detections, _, sizes = self.model.run([image])
        det = to_original_size(detections[0], sizes[0], image.shape[-2:])
        outputs = (det["boxes"], det["scores"], det["labels"])
        return outputs + (det["masks"],) if self.mask_on else outputs


@dataclass
class ExportSpec:
    """What an exported program reads and returns, and how to run the eager model the same way.

    Attributes:
        kind: "classifier", "video" or "detector".
        module: the tensor-in, tensor-out wrapper to export.
        input_name: name of the one input.
        output_names: names of the outputs, in order.
        dynamic_axes: ``{axis: name}`` of the input's axes that may change size.
        samples: example inputs: the first is traced, all are verified.
        eager: runs the unwrapped model on an input, as the data loader would feed it, and returns
            its outputs in ``output_names`` order (the reference the export is checked against).
        convention: the input convention, for the export report.
    """

    kind: str
    module: nn.Module
    input_name: str
    output_names: list[str]
    dynamic_axes: dict[int, str]
    samples: list[torch.Tensor]
    eager: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    convention: dict[str, Any] = field(default_factory=dict)


def _pixels(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Integer-valued float pixels 0-255 (exact as uint8 too)."""
    return torch.randint(0, 256, shape, generator=generator).float()


def export_spec(model: nn.Module, cfg, seed: int = 0, sample: torch.Tensor | None = None) -> ExportSpec:
    """The :class:`ExportSpec` of a built gn_det model (classifier, video or Mask R-CNN).

    Args:
        model: the model, in eval mode, on the CPU.
        cfg: its config (test sizes, pixel statistics).
        seed: seeds the random sample inputs.
        sample: an RGB 0-255 image (3, H, W) to use as the first sample of an image model
            (verification on a real image: a trained detector finds nothing on noise).

    Raises:
        TypeError: a model gn_det cannot export.
    """
    g = torch.Generator().manual_seed(seed)
    if isinstance(model, ResNetClassifier):
        s = int(cfg.INPUT.TEST_CROP_SIZE)
        first = sample.unsqueeze(0) if sample is not None else _pixels(g, 2, 3, s, s)
        return ExportSpec(
            "classifier", DeployableClassifier(model), "images", ["logits"], {0: "batch", 2: "height", 3: "width"},
            [first, _pixels(g, 1, 3, s, s)], lambda x: (model([{"image": im} for im in x]),),
            _image_convention(model.input_format, model.pixel_mean.flatten().tolist(),
                              model.pixel_std.flatten().tolist(),
                              f"resize the short side to INPUT.TEST_RESIZE ({cfg.INPUT.TEST_RESIZE}), centre crop "
                              f"INPUT.TEST_CROP_SIZE ({s})"))
    if isinstance(model, VideoClassifier):
        t, s = int(cfg.DATA.NUM_FRAMES), int(cfg.DATA.TEST_CROP_SIZE)
        mean, std = list(cfg.DATA.MEAN), list(cfg.DATA.STD)
        convention = {
            "input": "float32 (N, 3, T, H, W), RGB, 0-255",
            "inside_graph": [f"(x / 255 - {mean}) / {std} (DATA.MEAN/STD, RGB)"]
            + (["channels flipped to BGR (INPUT.FORMAT)"] if model.input_format == "BGR" else [])
            + (["differences of consecutive frames (MODEL.VIDEO.INPUT_MODALITY rgb_diff)"]
               if model.input_modality == "rgb_diff" else []),
            "outside_graph": f"decode, sample DATA.NUM_FRAMES ({t}) frames every DATA.SAMPLING_RATE "
                             f"({cfg.DATA.SAMPLING_RATE}), resize the short side and crop to DATA.TEST_CROP_SIZE "
                             f"({s}); average the logits of a video's clips",
        }
        return ExportSpec(
            "video", DeployableVideo(model, mean, std), "clips", ["logits"],
            {0: "batch", 2: "frames", 3: "height", 4: "width"}, [_pixels(g, 1, 3, t, s, s), _pixels(g, 2, 3, t, s, s)],
            lambda x: (model([{"video": _loader_normalized(c, mean, std), "label": 0} for c in x]),), convention)
    if isinstance(model, GNMaskRCNN):
        h = int(cfg.INPUT.MIN_SIZE_TEST)
        w = min(int(cfg.INPUT.MAX_SIZE_TEST), round(h * 4 / 3))
        wrapper = DeployableDetector(model)
        names = ["boxes", "scores", "labels"] + (["masks"] if wrapper.mask_on else [])
        first = sample if sample is not None else _pixels(g, 3, h, w)
        transform = model.transform
        return ExportSpec(
            "detector", wrapper, "image", names, {1: "height", 2: "width"}, [first, _pixels(g, 3, w, h)],
            lambda x: _in_order(model([{"image": x}])[0], names),
            _image_convention(transform.input_format, list(transform.image_mean), list(transform.image_std),
                              f"resize the short side to INPUT.MIN_SIZE_TEST ({h}), the long side at most "
                              f"INPUT.MAX_SIZE_TEST ({cfg.INPUT.MAX_SIZE_TEST}); scale boxes and masks back to "
                              f"the original image", extra=["padding to a multiple of 32", "RPN, RoI heads, NMS",
                                                             "masks pasted and thresholded at 0.5"]))
    raise TypeError(f"gn_det cannot export a {type(model).__name__}: it exports ResNetClassifier, VideoClassifier "
                    f"and GNMaskRCNN")


def _image_convention(input_format: str, mean: list[float], std: list[float], outside: str,
                      extra: list[str] | None = None) -> dict[str, Any]:
    mean, std = [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]
    steps = (["channels flipped to BGR (INPUT.FORMAT BGR)"] if input_format == "BGR" else []) + [
        f"(x - {mean}) / {std} (MODEL.PIXEL_MEAN/STD, in {input_format} order)"]
    return {"input": "float32, RGB, 0-255", "weights_expect": input_format,
            "inside_graph": steps + (extra or []), "outside_graph": f"decode; {outside}"}


def _in_order(outputs: dict[str, torch.Tensor], names: list[str]) -> tuple[torch.Tensor, ...]:
    return tuple(outputs[n] for n in names)


def _loader_normalized(clip: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """A (3, T, H, W) 0-255 clip as the video loader hands it to the model (its own function)."""
    from gn_det.data.video.transforms import to_normalized_cthw

    return to_normalized_cthw(clip.to(torch.uint8).permute(1, 0, 2, 3), mean, std)
