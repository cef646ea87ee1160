"""Pretrained weights by name: ``catalog://``, ``detectron2://``, ``torchvision://``, ``https://``, ``file://``.

MODEL.WEIGHTS and ``gn-det-convert`` accept, besides a local path:

===============================================  ==================================================
name                                             file
===============================================  ==================================================
``catalog://ImageNetPretrained/FAIR/R-50-GN``    detectron2's ModelCatalog (Detectron's Caffe2
``catalog://ImageNetPretrained/MSRA/R-50`` ...   ImageNet models, :data:`CATALOG_IMAGENET`) under
``catalog://Caffe2Detectron/COCO/<id>/<name>``   :data:`CATALOG_BASE_URL`; Detectron COCO detectors
``detectron2://<path in its model zoo>``         :data:`DETECTRON2_BASE_URL` + path (query dropped),
                                                 e.g. ``detectron2://ImageNetPretrained/MSRA/R-50.pkl``
``torchvision://resnet50``                       torchvision's weights enum: a bare model name is its
``torchvision://ResNet50_Weights.IMAGENET1K_V1``  ``IMAGENET1K_V1`` (``pretrained=True``, the backbone
                                                 torchvision's own detectors start from)
``https://...``, ``http://...``, ``file://...``  that URL; ``#sha256=<hex>`` checks the file
===============================================  ==================================================

A file is downloaded once into ``$GN_DET_CACHE/weights/<host>/<url path>`` (:func:`weights_cache_dir`)
with a progress bar: into a temporary file beside it, checked, then renamed into place, so an
interrupted or refused download never leaves a file there that a later run would take as complete.
Checksums: torchvision's file names carry the first hex digits of the file's SHA-256
(``resnet50-0676ba61.pth``), checked as ``torch.hub`` does; a ``#sha256=`` fragment is checked in
full. detectron2's and Detectron's files publish no checksum: they are **unverified** (the
``model_final_<6 hex>.pkl`` suffix of detectron2's model zoo is not a hash of the file).

The catalog's ImageNet models are Detectron (Caffe2) blobs; they are converted once, through the
format readers of :mod:`gn_det.checkpoint.formats`, into a gn_det ``.pth`` in
``$GN_DET_CACHE/weights/converted/`` whose meta records the Caffe2 names' source, the BGR input
convention and the catalog's stride placement (MSRA models: stride on the 1x1 conv; FAIR models: on
the 3x3). Whole detectors and torchvision state dicts need no conversion: the loading path reads
them as they are.

Offline (no network, or ``GN_DET_OFFLINE=1``): :class:`WeightsUnavailableError`, one line naming the
URL and the cache path where the file can be placed by hand.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..utils.cache import cache_root
from .io import CheckpointError

__all__ = ["SCHEMES", "CATALOG_BASE_URL", "DETECTRON2_BASE_URL", "TORCHVISION_BASE_URL", "CATALOG_IMAGENET",
           "CATALOG_DETECTRON", "OFFLINE_ENV", "WeightsSource", "WeightsUnavailableError", "is_weights_url",
           "weights_source", "weights_cache_dir", "download", "resolve_weights"]

logger = logging.getLogger(__name__)

SCHEMES = ("catalog", "detectron2", "torchvision", "https", "http", "file")
OFFLINE_ENV = "GN_DET_OFFLINE"
# Module attributes, so tests point them at a local server (never the internet).
CATALOG_BASE_URL = "https://dl.fbaipublicfiles.com/detectron/"
DETECTRON2_BASE_URL = "https://dl.fbaipublicfiles.com/detectron2/"
TORCHVISION_BASE_URL = "https://download.pytorch.org/models/"

# detectron2's ModelCatalog.C2_IMAGENET_MODELS: name -> (path under CATALOG_BASE_URL, stride on the 1x1).
# MSRA's models put the stride on the 1x1 conv, FAIR's on the 3x3; all expect BGR, std 1.
CATALOG_IMAGENET = {
    "MSRA/R-50": ("ImageNetPretrained/MSRA/R-50.pkl", True),
    "MSRA/R-101": ("ImageNetPretrained/MSRA/R-101.pkl", True),
    "FAIR/R-50-GN": ("ImageNetPretrained/47261647/R-50-GN.pkl", False),
    "FAIR/R-101-GN": ("ImageNetPretrained/47592356/R-101-GN.pkl", False),
    "FAIR/X-101-32x8d": ("ImageNetPretrained/20171220/X-101-32x8d.pkl", False),
    "FAIR/X-101-64x4d": ("ImageNetPretrained/FBResNeXt/X-101-64x4d.pkl", False),
    "FAIR/X-152-32x8d-IN5k": ("ImageNetPretrained/25093814/X-152-32x8d-IN5k.pkl", False),
}
# detectron2's ModelCatalog.C2_DETECTRON_MODELS, the FPN Mask R-CNNs gn_det builds: whole detectors.
_C2_DATASET = "coco_2014_train%3Acoco_2014_valminusminival"
CATALOG_DETECTRON = {
    "35858933/e2e_mask_rcnn_R-50-FPN_1x":
        "35858933/12_2017_baselines/e2e_mask_rcnn_R-50-FPN_1x.yaml.01_48_14.DzEQe4wC",
    "35861795/e2e_mask_rcnn_R-101-FPN_1x":
        "35861795/12_2017_baselines/e2e_mask_rcnn_R-101-FPN_1x.yaml.02_31_37.KqyEK4tT",
    "48616381/e2e_mask_rcnn_R-50-FPN_2x_gn":
        "GN/48616381/04_2018_gn_baselines/e2e_mask_rcnn_R-50-FPN_2x_gn_0416.13_23_38.bTlTI97Q",
}
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_TORCHVISION_HASH_RE = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's HASH_REGEX
_CHUNK = 1 << 20


class WeightsUnavailableError(CheckpointError):
    """A named weights file that is not in the cache and cannot be downloaded (offline, HTTP error)."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a weights name points.

    Attributes:
        name: as the user wrote it.
        url: the file's URL.
        cache_path: where the downloaded file is kept.
        sha256: the expected SHA-256 hex digest or its first digits (torchvision); None: unverified.
        stride_in_1x1: the catalog's stride placement, recorded when the file is converted.
        convert: a Caffe2 ImageNet model: converted once into a gn_det ``.pth`` (:attr:`converted_path`).
    """

    name: str
    url: str
    cache_path: Path
    sha256: str | None = None
    stride_in_1x1: bool | None = None
    convert: bool = False

    @property
    def converted_path(self) -> Path:
        """The gn_det ``.pth`` a Caffe2 ImageNet model is converted into."""
        rel = self.cache_path.relative_to(weights_cache_dir())
        return (weights_cache_dir() / "converted" / rel).with_suffix(".pth")


def is_weights_url(name: str | os.PathLike) -> bool:
    """True if ``name`` is one of the schemes of the module docstring (not a local path)."""
    m = _SCHEME_RE.match(os.fspath(name)) if isinstance(name, (str, os.PathLike)) else None
    return bool(m) and m.group(1).lower() in SCHEMES


def weights_cache_dir() -> Path:
    """``$GN_DET_CACHE/weights`` (default ``~/.cache/gn_det/weights``)."""
    return cache_root() / "weights"


def _cache_path(url: str) -> Path:
    """``weights_cache_dir()/<host>/<path>``: the URL's path, decoded, without query or fragment."""
    parts = urlsplit(url)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments or any(s in (".", "..") for s in segments):
        raise CheckpointError(f"{url}: names no file (expected a path ending in a file name)")
    return weights_cache_dir().joinpath(parts.netloc.replace(":", "_") or "localhost", *segments)


def _catalog_source(name: str, entry: str) -> WeightsSource:
    base = CATALOG_BASE_URL.rstrip("/") + "/"
    if entry.startswith("ImageNetPretrained/"):
        key = entry[len("ImageNetPretrained/"):]
        if key in CATALOG_IMAGENET:
            path, stride = CATALOG_IMAGENET[key]
            url = base + path
            return WeightsSource(name, url, _cache_path(url), stride_in_1x1=stride, convert=True)
    elif entry.startswith("Caffe2Detectron/COCO/"):
        key = entry[len("Caffe2Detectron/COCO/"):]
        if key in CATALOG_DETECTRON:
            url = f"{base}{CATALOG_DETECTRON[key]}/output/train/{_C2_DATASET}/generalized_rcnn/model_final.pkl"
            return WeightsSource(name, url, _cache_path(url))
    known = [f"catalog://ImageNetPretrained/{k}" for k in CATALOG_IMAGENET]
    known += [f"catalog://Caffe2Detectron/COCO/{k}" for k in CATALOG_DETECTRON]
    raise CheckpointError(f"{name} is not in detectron2's model catalog; known names: {', '.join(known)}")


def _torchvision_source(name: str, entry: str) -> WeightsSource:
    import torchvision.models  # only for torchvision:// names: the weights enums

    try:
        if "." in entry:  # ResNet50_Weights.IMAGENET1K_V1
            weights = torchvision.models.get_weight(entry)
        else:  # resnet50: the ImageNet weights pretrained=True meant
            enum = torchvision.models.get_model_weights(entry)
            weights = getattr(enum, "IMAGENET1K_V1", None) or enum.DEFAULT
    except (ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{name}: torchvision has no such weights ({e}); name them like "
                              f"torchvision://resnet50 or torchvision://ResNet50_Weights.IMAGENET1K_V2") from None
    filename = weights.url.rsplit("/", 1)[-1]
    url = TORCHVISION_BASE_URL.rstrip("/") + "/" + filename
    digest = _TORCHVISION_HASH_RE.search(filename)
    return WeightsSource(name, url, _cache_path(url), sha256=digest.group(1) if digest else None)


def weights_source(name: str) -> WeightsSource:
    """Where ``name`` (one of the module docstring's forms) points; nothing is downloaded.

    Raises:
        CheckpointError: an unknown catalog entry or torchvision weights name, or a URL naming no file.
    """
    m = _SCHEME_RE.match(name)
    scheme = m.group(1).lower() if m else ""
    entry = name[m.end():] if m else name
    if scheme == "catalog":
        return _catalog_source(name, entry)
    if scheme == "detectron2":
        url = DETECTRON2_BASE_URL.rstrip("/") + "/" + urlsplit(entry)._replace(query="").geturl().lstrip("/")
        return WeightsSource(name, url, _cache_path(url))
    if scheme == "torchvision":
        return _torchvision_source(name, entry)
    if scheme in ("https", "http", "file"):
        parts = urlsplit(name)
        fragment = dict(p.split("=", 1) for p in parts.fragment.split("&") if "=" in p)
        url = parts._replace(fragment="").geturl()
        return WeightsSource(name, url, _cache_path(url), sha256=fragment.get("sha256", "").lower() or None)
    raise CheckpointError(f"{name}: not a weights URL; use a local path or one of {', '.join(s + '://' for s in SCHEMES)}")


def _unavailable(source: WeightsSource, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"cannot download {source.url} for {source.name} ({reason}); download it elsewhere and place it at "
        f"{source.cache_path}, or set MODEL.WEIGHTS to a local file")


def download(source: WeightsSource, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """The file ``source`` names, downloaded into ``source.cache_path`` unless already there.

    The bytes go to a temporary file beside the target; it is renamed into place only when the
    announced length arrived and the checksum (if the publisher gives one) matches.

    Raises:
        WeightsUnavailableError: offline (``GN_DET_OFFLINE`` set or no connection), an HTTP error, or a
            download that ended early.
        CheckpointError: the file's checksum differs from the publisher's (nothing is kept).
    """
    target = source.cache_path
    if target.is_file():
        return target
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        raise _unavailable(source, f"{OFFLINE_ENV} is set")
    import urllib.error
    import urllib.request

    from ..utils.io import atomic_write_file

    try:
        response = urllib.request.urlopen(source.url, timeout=timeout)  # noqa: S310 (the user's URL)
    except urllib.error.HTTPError as e:
        raise _unavailable(source, f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise _unavailable(source, f"{getattr(e, 'reason', e)}") from None
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        logger.info("Downloading %s to %s", source.url, target)
        atomic_write_file(target, lambda f: _copy_checked(response, f, source, total, progress))
    return target


def _copy_checked(response, f, source: WeightsSource, total: int | None, progress: bool) -> None:
    """Stream ``response`` into ``f`` hashing it; raise (the caller's atomic write then deletes the
    temporary file) on a short read or a checksum mismatch."""
    from ..utils.progress import progress_bar  # tqdm: only when downloading

    sha, size = hashlib.sha256(), 0
    with progress_bar(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
                      desc=source.cache_path.name) as bar:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except OSError as e:
                raise _unavailable(source, f"connection lost after {size} bytes: {e}") from None
            if not chunk:
                break
            sha.update(chunk)
            f.write(chunk)
            size += len(chunk)
            bar.update(len(chunk))
    if total is not None and size != total:
        raise _unavailable(source, f"the download ended after {size} of {total} bytes")
    digest = sha.hexdigest()
    if source.sha256 and not digest.startswith(source.sha256):
        raise CheckpointError(f"{source.url}: SHA-256 {digest[:len(source.sha256)]}... differs from the published "
                              f"{source.sha256}; the file was not kept (a broken or tampered download: retry, or "
                              f"check the URL)")


def _convert_catalog(source: WeightsSource, raw_path: Path) -> Path:
    """A Caffe2 ImageNet model as a gn_det ``.pth`` (once), with the catalog's stride placement recorded."""
    out = source.converted_path
    if out.is_file():
        return out
    from .formats import read_checkpoint, write_checkpoint  # torch and numpy: only when converting

    ckpt = read_checkpoint(raw_path, "caffe2", stride_in_1x1=source.stride_in_1x1)
    where = "1x1 (MSRA model)" if source.stride_in_1x1 else "3x3 (FAIR model)"
    ckpt.meta.update(stride_source=f"detectron2 ModelCatalog: stride on the {where}", source_url=source.url,
                     source_name=source.name, source_file=str(raw_path))
    write_checkpoint(ckpt, out, "gn_det")
    logger.info("Converted %s (Caffe2 names, %s input, stride on the %s) to %s", source.name,
                ckpt.meta.get("input", {}).get("format", "?"), where, out)
    return out


def resolve_weights(name: str | os.PathLike, *, progress: bool = True) -> Path:
    """The local file for ``name``: a path is returned as it is; a URL or catalog name is downloaded
    once (:func:`download`) and, for the catalog's Caffe2 ImageNet models, converted once.

    Raises:
        WeightsUnavailableError, CheckpointError: see :func:`weights_source` and :func:`download`.
    """
    if not is_weights_url(name):
        return Path(name)
    source = weights_source(os.fspath(name))
    path = download(source, progress=progress)
    if source.convert:
        path = _convert_catalog(source, path)
    if path != Path(name):
        logger.info("%s -> %s", source.name, path)
    return path
