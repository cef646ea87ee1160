"""The ResNet depths and their stages, without torch: command-line parsers list them as choices
(``gn-det-convert --help`` answers at once); :mod:`gn_det.modeling.backbone.resnet` builds them."""

__all__ = ["RESNET_SPECS", "RESNET_ARCHS"]

# depth -> (block class name, blocks per stage)
RESNET_SPECS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
# torchvision's model names ("resnet50") -> depth
RESNET_ARCHS: dict[str, int] = {f"resnet{depth}": depth for depth in RESNET_SPECS}
