"""The packages whose names load on first use (:func:`gn_det.utils.lazy.lazy_exports`, issue 11) still
give every name they export, the very object of its submodule, and refuse unknown names as before."""

import importlib
import subprocess
import sys

import pytest

from gn_det.utils.lazy import lazy_exports

LAZY_PACKAGES = ["gn_det.checkpoint", "gn_det.data", "gn_det.data.video", "gn_det.layers",
                 "gn_det.modeling.backbone"]


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_export_is_its_submodules_object(package):
    pkg = importlib.import_module(package)
    assert len(pkg.__all__) == len(set(pkg.__all__)) >= 2
    for module, names in pkg._EXPORTS.items():
        sub = importlib.import_module(module, package)
        for name in names:
            assert getattr(pkg, name) is getattr(sub, name), (package, name)
    assert set(pkg.__all__) <= set(dir(pkg))
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'no_such_name'"):
        pkg.no_such_name  # noqa: B018


def test_from_import_and_star_import():
    from gn_det.layers import GROUP_POLICIES, NormSpec, parse_norm

    assert parse_norm("GN", num_groups=8) == NormSpec("GN", num_groups=8)
    assert GROUP_POLICIES[0] == "strict"
    namespace: dict = {}
    exec("from gn_det.checkpoint import *", namespace)
    assert {"CheckpointError", "read_checkpoint", "FORMATS"} <= namespace.keys()


def test_first_read_imports_only_its_submodule():
    # a fresh process: reading one name of gn_det.checkpoint loads that submodule, not the others
    code = ("import sys, gn_det.checkpoint as c; assert 'torch' not in sys.modules; c.FORMATS; "
            "assert 'torch' not in sys.modules and 'gn_det.checkpoint.formats' not in sys.modules; "
            "c.parse_name; print('gn_det.checkpoint.names' in sys.modules, 'gn_det.checkpoint.formats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]


def test_lazy_exports_caches_the_value():
    module = type(sys)("gn_det_test_lazy_pkg")
    module.__path__ = []
    sys.modules[module.__name__] = module
    try:
        getattr_, dir_ = lazy_exports(module.__name__, {"json": ("dumps", "loads")})
        # an absolute module name works as well as a relative one
        assert getattr_("dumps") is importlib.import_module("json").dumps
        assert vars(module)["dumps"] is importlib.import_module("json").dumps
        assert {"dumps", "loads"} <= set(dir_())
        with pytest.raises(AttributeError):
            getattr_("load")
    finally:
        del sys.modules[module.__name__]
