"""The smoke modes of benchmarks/bench_primitives.py and bench_options.py: rows, ratios, JSON,
and the benchmark's "before" references computing what the layers compute now."""

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import bench_options  # noqa: E402
import bench_primitives  # noqa: E402
from gn_det.layers import standardize_weight  # noqa: E402

torch.set_num_threads(1)


def test_before_references_compute_what_the_layers_compute():
    bn = bench_primitives._frozen_bn(6)
    x = torch.randn(2, 6, 3, 5, 5)
    torch.testing.assert_close(bench_primitives.frozen_bn_before(bn, x), bn(x))
    w = torch.randn(8, 4, 3, 3, dtype=torch.float64) * 0.05
    for mode in ("authors", "paper", "timm"):
        torch.testing.assert_close(bench_primitives.ws_before(w, mode), standardize_weight(w, mode))


def test_bench_primitives_smoke(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert bench_primitives.main(["--smoke", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    # 2 shapes x 2 passes of FrozenBN; 3 WS modes x (1 weight + 1 conv)
    assert [r["primitive"] for r in rows] == ["FrozenBN"] * 4 + [f"WS {m}" for m in ("authors", "paper", "timm")
                                                                  for _ in range(2)]
    for r in rows:
        assert r["before"] > 0 and r["after"] > 0 and r["ratio"] == pytest.approx(r["after"] / r["before"])
    assert "after/before" in capsys.readouterr().out


def test_bench_options_smoke(tmp_path):
    out = tmp_path / "o.json"
    assert bench_options.main(["--smoke", "--configs", "configs/synthetic/mask_rcnn_R_18_FPN_test.yaml",
                               "--options", "channels_last", "baseline", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = data["results"]
    assert [r["option"] for r in rows] == ["baseline", "channels_last"]  # baseline first: the ratios' base
    assert rows[0]["ratio_to_baseline"] == 1.0
    assert rows[1]["ratio_to_baseline"] == pytest.approx(rows[1]["median_s"] / rows[0]["median_s"])
    assert all(r["steps"] == 1 and r["first_step_s"] > 0 for r in rows)
    assert len(data["env"]["loadavg_start"]) == 3 and len(data["env"]["loadavg_end"]) == 3
