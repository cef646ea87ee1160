"""The replica check at the end of distributed training: a fingerprint that sees one changed bit or
two swapped tensors, and a warning naming the ranks that differ."""

import logging

import torch

from gn_det.engine import replicas
from gn_det.engine.replicas import check_replicas_agree, parameter_fingerprint


def test_fingerprint_sees_one_changed_value_and_a_swap():
    w, b = torch.arange(6.0).reshape(2, 3), torch.arange(6.0).reshape(2, 3) + 10
    fp = parameter_fingerprint([("w", w), ("b", b)])
    assert len(fp) == 16
    assert parameter_fingerprint([("b", b.clone()), ("w", w.clone())]) == fp  # values, not objects or order
    nudged = b.clone()
    nudged[1, 2] = torch.nextafter(nudged[1, 2], torch.tensor(100.0))  # the smallest step up
    assert parameter_fingerprint([("w", w), ("b", nudged)]) != fp
    assert parameter_fingerprint([("w", b), ("b", w)]) != fp  # swapped tensors of one shape
    assert parameter_fingerprint([("w", w.double()), ("b", b)]) != fp


def test_differing_replicas_are_named(monkeypatch, caplog):
    model = torch.nn.Linear(3, 2)
    own = parameter_fingerprint(model.named_parameters())
    monkeypatch.setattr(replicas.comm, "get_world_size", lambda: 3)
    monkeypatch.setattr(replicas.comm, "get_rank", lambda: 0)
    monkeypatch.setattr(replicas.comm, "all_gather", lambda fp: [fp, fp, "0" * 16])
    with caplog.at_level(logging.INFO, logger="gn_det.engine.replicas"):
        assert not check_replicas_agree(model)
    assert f"rank(s) [2] differ from rank 0 (fingerprints ['{own}', '{own}', '0000000000000000'])" in caplog.text
    monkeypatch.setattr(replicas.comm, "all_gather", lambda fp: [fp] * 3)
    with caplog.at_level(logging.INFO, logger="gn_det.engine.replicas"):
        assert check_replicas_agree(model)
    assert f"Parameters identical on all 3 ranks (fingerprint {own})" in caplog.text
