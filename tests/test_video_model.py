"""The I3D video model: PySlowFast's temporal layout, torchvision key names under ``resnet.``, the head,
and every norm (BN, SyncBN, FrozenBN, GN, GN+WS) training a few steps on a tiny synthetic set."""

import os

import pytest
import torch
from torch import nn

from gn_det.config import ConfigError, load_config
from gn_det.data.video.build import build_video_dataset
from gn_det.layers.frozen_bn import FrozenBatchNorm
from gn_det.layers.ws_conv import WSConv3d
from gn_det.modeling.backbone.resnet import build_resnet
from gn_det.modeling.video_resnet import VideoClassifier, build_video_model, i3d_resnet, i3d_temporal_kernels

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "video", "synthetic", "r3d_18_gn_test.yaml")


def _cfg(*opts):
    return load_config(CONFIG, list(opts))


def _temporal_sizes(model: VideoClassifier, conv: str) -> list[list[int]]:
    return [[b.get_submodule(conv).kernel_size[0] for b in getattr(model.resnet, f"layer{i}")] for i in range(1, 5)]


def test_r50_has_pyslowfast_i3d_temporal_kernels():
    model = i3d_resnet(50, "GN", num_classes=400)
    assert model.resnet.conv1.kernel_size == (5, 7, 7) and model.resnet.conv1.stride == (1, 2, 2)
    assert model.resnet.conv1.padding == (2, 3, 3)
    assert _temporal_sizes(model, "conv1") == [[3, 3, 3], [3, 1, 3, 1], [3, 1, 3, 1, 3, 1], [1, 3, 1]]
    # the 3x3 and the last 1x1 of every bottleneck stay 2D in time
    assert all(k == 1 for stage in _temporal_sizes(model, "conv2") + _temporal_sizes(model, "conv3") for k in stage)
    assert model.resnet.layer1[0].conv1.kernel_size == (3, 1, 1)
    assert model.resnet.temporal_pool.kernel_size == (2, 1, 1) and model.resnet.temporal_pool.stride == (2, 1, 1)
    assert i3d_temporal_kernels(101)[2] == [3, 1] * 11 + [3]  # res4 of ResNet-101: 23 blocks alternating


def test_r18_basic_blocks_put_time_on_their_first_3x3():
    model = i3d_resnet(18, "GN", num_classes=6)
    assert _temporal_sizes(model, "conv1") == [[3, 3], [3, 1], [3, 1], [1, 3]]
    assert model.resnet.layer3[0].conv1.kernel_size == (3, 3, 3) and model.resnet.layer3[1].conv1.kernel_size == (1, 3, 3)
    assert all(b.conv2.kernel_size == (1, 3, 3) for i in range(1, 5) for b in getattr(model.resnet, f"layer{i}"))


@pytest.mark.parametrize("depth", [18, 50])
def test_keys_are_torchvision_names_under_resnet_prefix(depth):
    model = i3d_resnet(depth, "BN", num_classes=7)
    keys2d = set(build_resnet(depth, "BN").state_dict())
    keys = set(model.state_dict())
    assert {k for k in keys if k.startswith("resnet.")} == {f"resnet.{k}" for k in keys2d}
    assert {k for k in keys if not k.startswith("resnet.")} == {"head.fc.weight", "head.fc.bias"}


def test_shapes_time_is_halved_once_and_logits_come_out():
    model = i3d_resnet(18, "GN", num_classes=5).eval()
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        out = model.resnet(x)
        assert out.shape == (2, 512, 4, 1, 1)  # T 8 -> 4 (pool1 only), 32 px -> 1
        logits = model([{"video": v, "label": 0} for v in x])
    assert logits.shape == (2, 5)
    model.train()
    loss = model({"video": x, "label": torch.tensor([1, 4])})  # a collate_video_samples batch works too
    assert set(loss) == {"loss_cls"} and loss["loss_cls"].ndim == 0
    with pytest.raises(ValueError, match="MODEL.NUM_CLASSES"):
        model({"video": x, "label": torch.tensor([1, 5])})
    with pytest.raises(ValueError, match=r"\(N, 3, T, H, W\)"):
        model({"video": torch.zeros(2, 3, 8, 8), "label": torch.tensor([0, 0])})


def test_head_conv_takes_its_own_norm_and_ws():
    cfg = _cfg("MODEL.RESNETS.NORM", "BN", "MODEL.VIDEO_HEAD.CONV_DIM", "64", "MODEL.VIDEO_HEAD.NORM", "GN+WS")
    model = build_video_model(cfg)
    assert isinstance(model.head.conv, WSConv3d) and isinstance(model.head.norm, nn.GroupNorm)
    assert model.head.norm.num_groups == 8 and model.head.fc.in_features == 64
    assert not any(isinstance(m, WSConv3d) for m in model.resnet.modules())
    assert any(isinstance(m, nn.BatchNorm3d) for m in model.resnet.modules())
    plain = build_video_model(_cfg())
    assert plain.head.conv is None and plain.head.fc.in_features == 512


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="META_ARCHITECTURE"):
        build_video_model(_cfg("MODEL.META_ARCHITECTURE", "SlowFast"))
    with pytest.raises(ConfigError, match="MODEL.VIDEO"):
        build_video_model(_cfg("MODEL.VIDEO.TEMPORAL_KERNELS", "[3, 3, 2, 1]"))
    with pytest.raises(ConfigError, match="DROPOUT_RATE"):
        build_video_model(_cfg("MODEL.DROPOUT_RATE", "1.0"))
    custom = build_video_model(_cfg("MODEL.VIDEO.TEMPORAL_KERNELS", "[1, 1, 1, [3, 1]]", "MODEL.VIDEO.TEMPORAL_POOL", "1",
                                    "MODEL.VIDEO.STEM_TEMPORAL_KERNEL", "3"))
    assert _temporal_sizes(custom, "conv1") == [[1, 1], [1, 1], [1, 1], [3, 1]]
    assert custom.resnet.temporal_pool is None and custom.resnet.conv1.kernel_size == (3, 7, 7)


NORM_TYPES = {"BN": nn.BatchNorm3d, "SyncBN": nn.SyncBatchNorm, "FrozenBN": FrozenBatchNorm, "GN": nn.GroupNorm,
              "GN+WS": nn.GroupNorm}


@pytest.fixture(scope="module")
def train_batches():
    cfg = _cfg()
    dataset = build_video_dataset(cfg, "motion_test_train", train=True)
    return [[dataset[(i, 0)], dataset[(i + 1, 0)]] for i in (0, 2, 4)]


@pytest.mark.parametrize("norm", list(NORM_TYPES))
def test_every_norm_builds_and_trains_on_the_synthetic_set(norm, train_batches):
    """SyncBN outside a process group normalizes over the local batch (it is BN then): that is what
    runs here; inside a CPU process group torch refuses SyncBN's training forward (it syncs on GPUs only)."""
    torch.manual_seed(0)
    model = build_video_model(_cfg("MODEL.RESNETS.NORM", norm))
    norms = [m for m in model.resnet.modules() if isinstance(m, tuple(NORM_TYPES.values()))]
    assert norms and all(type(m) is NORM_TYPES[norm] for m in norms)
    convs = [m for m in model.resnet.modules() if isinstance(m, nn.Conv3d)]
    assert all(isinstance(c, WSConv3d) == norm.endswith("+WS") for c in convs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    model.train()
    losses = []
    for batch in train_batches:
        loss = model(batch)["loss_cls"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    after = model.state_dict()
    assert not torch.equal(before["resnet.layer4.1.conv2.weight"], after["resnet.layer4.1.conv2.weight"])
    assert not torch.equal(before["head.fc.weight"], after["head.fc.weight"])
    if norm in ("BN", "SyncBN"):  # batch statistics were tracked
        assert not torch.equal(before["resnet.bn1.running_mean"], after["resnet.bn1.running_mean"])
    if norm == "FrozenBN":  # nothing to learn in a frozen norm, its statistics stay
        assert torch.equal(before["resnet.bn1.running_var"], after["resnet.bn1.running_var"])
    model.eval()
    with torch.no_grad():
        logits = model(train_batches[0])
    assert logits.shape == (2, 6) and torch.isfinite(logits).all()


def test_rgb_diff_modality_feeds_frame_differences():
    diff = i3d_resnet(18, "GN", num_classes=4, input_modality="rgb_diff").eval()
    plain = i3d_resnet(18, "GN", num_classes=4).eval()
    plain.load_state_dict(diff.state_dict())
    x = torch.randn(2, 3, 5, 32, 32)
    labels = torch.tensor([0, 3])
    with torch.no_grad():
        assert torch.equal(diff({"video": x, "label": labels}), plain({"video": x[:, :, 1:] - x[:, :, :-1], "label": labels}))
        still = x[:, :, :1].repeat(1, 1, 5, 1, 1)  # a clip without motion looks like an empty one
        assert torch.equal(diff({"video": still, "label": labels}), diff({"video": torch.zeros_like(x), "label": labels}))
    with pytest.raises(ValueError, match="at least 2 frames"):
        diff({"video": torch.zeros(1, 3, 1, 32, 32), "label": torch.tensor([0])})
    with pytest.raises(ConfigError, match="INPUT_MODALITY"):
        build_video_model(_cfg("MODEL.VIDEO.INPUT_MODALITY", "flow"))
    assert build_video_model(_cfg()).input_modality == "rgb_diff"  # the demo's (and the tests') setting
