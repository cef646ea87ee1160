"""benchmarks/bench_suite.py: its --smoke run's JSON holds consistent numbers (no timing asserts)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_suite  # noqa: E402
from bench_peer import peer_mismatches  # noqa: E402
from gn_det.config import load_config  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_suite.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "## Peer" in proc.stdout and "## Inference" in proc.stdout
    return json.loads(out.read_text())


def test_smoke_records_machine_and_settings(smoke):
    m = smoke["machine"]
    assert m["cpu_count"] >= 1 and m["threads"] == 1 and m["device"] == "cpu"
    assert m["torch"] and m["device_name"]
    assert len(m["loadavg_start"]) == 3 and len(m["loadavg_end"]) == 3
    s = smoke["settings"]
    assert s["smoke"] and s["size"] == 64 and s["iters"] == 2 and s["batches"] == [1]
    assert "RSS" in s["memory_measure"]


def test_smoke_ratios_divide_by_the_baseline_row_of_the_same_run(smoke):
    rows = {r["name"]: r for r in smoke["train"]}
    assert {"R18-FPN FrozenBN x1", "R18-FPN GN x1", "R18-FPN GN+WS x1", "R18-FPN torchvision x1",
            "R3D-18 BN x1", "R3D-18 GN x1"} <= set(rows)
    for r in rows.values():
        assert len(r["steps_s"]) == 2 and r["median_s"] == pytest.approx(statistics.median(r["steps_s"]))
        assert r["peak_mib"] > 0, r["name"]
        base = rows[r["baseline"]]
        if r["kind"] == "peer":
            assert "time_ratio" not in r and base["norm"] == "FrozenBN-2fc"
            continue
        assert base["norm"] == ("BN" if r["kind"] == "video" else "FrozenBN") and base["family"] == r["family"]
        assert r["time_ratio"] == pytest.approx(r["median_s"] / base["median_s"])
        assert r["mem_ratio"] == pytest.approx(r["peak_mib"] / base["peak_mib"])
    assert rows["R18-FPN FrozenBN x1"]["time_ratio"] == 1.0


def test_smoke_peer_row_beside_its_twin(smoke):
    (peer,) = smoke["peer"]
    rows = {r["name"]: r for r in smoke["train"]}
    assert peer["peer_row"] == "R18-FPN torchvision x1" and peer["gn_det_row"] == "R18-FPN FrozenBN-2fc x1"
    assert peer["gn_det_median_s"] == rows[peer["gn_det_row"]]["median_s"]
    assert peer["peer_median_s"] == rows[peer["peer_row"]]["median_s"]
    assert peer["ratio_gn_det_vs_peer"] == pytest.approx(peer["gn_det_median_s"] / peer["peer_median_s"])


def test_smoke_params_and_flops(smoke):
    models = {(c["family"], c["norm"]): c for c in smoke["models"]}
    frozen, gn, ws = (models[("R18-FPN", n)] for n in ("FrozenBN", "GN", "GN+WS"))
    assert gn["gflops"] == pytest.approx(frozen["gflops"], rel=0.05) and gn["gflops"] > 0
    assert ws["params"] == gn["params"] and ws["gflops"] == pytest.approx(gn["gflops"], rel=1e-6)
    assert "group_norm" in gn["gflops_by_operator"] and "group_norm" not in frozen["gflops_by_operator"]
    # the peer is a structural twin: same parameters, same convolution/linear FLOPs
    twin, peer = models[("R18-FPN", "FrozenBN-2fc")], models[("R18-FPN", "torchvision")]
    assert peer["params"] == twin["params"] and peer["trainable_params"] == twin["trainable_params"]
    assert peer["gflops_by_operator"]["conv"] == pytest.approx(twin["gflops_by_operator"]["conv"], rel=0.01)
    assert models[("R3D-18", "GN+WS")]["params"] == models[("R3D-18", "GN")]["params"]


def test_smoke_folded_ws_inference_matches_unfolded(smoke):
    (inf,) = smoke["inference"]
    assert inf["family"] == "R18-FPN" and inf["convs_folded"] > 0
    assert inf["max_abs_diff_fpn_features"] <= 1e-4
    assert inf["max_abs_diff_outputs"] is not None and inf["max_abs_diff_outputs"] <= 1e-4
    med = inf["median_s"]
    assert inf["ratio_folded_vs_gn"] == pytest.approx(med["GN+WS folded"] / med["GN"])


def test_only_keeps_the_baselines_it_divides_by():
    rows = bench_suite.select(bench_suite.all_rows([2], smoke=False), ["R50-FPN GN+WS", "torchvision"])
    names = {r.name for r in rows}
    assert names == {"R50-FPN GN+WS x2", "R50-FPN FrozenBN x2", "R50-FPN torchvision x2",
                     "R50-FPN FrozenBN-2fc x2", "R18-FPN torchvision x2", "R18-FPN FrozenBN-2fc x2",
                     "R18-FPN FrozenBN x2"}  # the twin's own baseline too


def test_peer_refuses_a_config_that_is_not_its_twin():
    cfg = load_config(str(REPO / "configs/mask_rcnn_R_50_FPN_4conv1fc_frozenbn_2x.yaml"), [])
    problems = peer_mismatches(cfg)
    assert any("NUM_CONV is 4" in p for p in problems) and any("NUM_FC is 1" in p for p in problems)
    assert peer_mismatches(load_config(str(REPO / "configs/mask_rcnn_R_50_FPN_2x.yaml"), [])) == []
