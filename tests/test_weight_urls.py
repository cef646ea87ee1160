"""Weights by name (catalog://, detectron2://, torchvision://, http(s)://, file://): downloaded once
from a server on 127.0.0.1 (never the internet: the base URLs are pointed at it), checked, converted,
and loaded through the one loading path; refusals leave nothing in the cache."""

import hashlib
import http.server
import io
import pickle
import threading

import pytest
import torch
import torchvision

from gn_det.checkpoint import convert_name, read_checkpoint
from gn_det.checkpoint import weight_urls as wu
from gn_det.cli.convert_checkpoint import main as convert_main
from gn_det.cli.train_net import describe_failure
from gn_det.config import load_config
from gn_det.engine.task import get_task
from gn_det.engine.trainer import load_model_weights

torch.set_num_threads(1)
CLS_CFG = "configs/classification/synthetic/R_18_gn_test.yaml"


class _Server:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1; ``truncate`` paths announce more bytes than
    they send; ``hits`` counts GET requests per path."""

    def __init__(self):
        self.files, self.truncate, self.hits = {}, set(), {}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                path = self.path.split("?")[0]
                owner.hits[path] = owner.hits.get(path, 0) + 1
                body = owner.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                cut = path in owner.truncate
                self.send_header("Content-Length", str(len(body) + (1000 if cut else 0)))
                self.end_headers()
                self.wfile.write(body)
                if cut:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server(monkeypatch, tmp_path):
    monkeypatch.setenv("GN_DET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(wu.OFFLINE_ENV, raising=False)
    s = _Server()
    for attr, folder in (("CATALOG_BASE_URL", "detectron/"), ("DETECTRON2_BASE_URL", "detectron2/"),
                         ("TORCHVISION_BASE_URL", "models/")):
        monkeypatch.setattr(wu, attr, s.url + folder)
    yield s
    s.close()


def _r18_state(seed=0, num_classes=10):
    """A torchvision ResNet-18 state dict whose tensors all differ (norm gammas/betas random too)."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=num_classes)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model.state_dict()


_FEW = ("conv1.weight", "bn1.weight", "bn1.bias", "layer2.0.bn1.weight", "layer2.0.bn1.bias",
        "layer3.1.bn2.weight", "layer3.1.bn2.bias", "fc.weight", "fc.bias")


def _few(state):
    """A few of a ResNet's tensors: small files for the tests that only move bytes."""
    return {k: state[k] for k in _FEW}


def _caffe2_gn_blobs(state):
    """The state dict as a Detectron GN ImageNet .pkl holds it: a flat dict of Caffe2-named arrays."""
    blobs = {}
    for key, value in state.items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        name = convert_name(key, "torchvision", "caffe2", caffe2_norm="gn")
        assert name is not None, key
        blobs[name] = value.numpy().copy()
    return pickle.dumps(blobs, protocol=2)


def _torch_bytes(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_catalog_name_is_downloaded_once_converted_and_loaded_through_model_weights(server, tmp_path):
    state = _r18_state()
    server.files["/detectron/ImageNetPretrained/47261647/R-50-GN.pkl"] = _caffe2_gn_blobs(state)
    name = "catalog://ImageNetPretrained/FAIR/R-50-GN"
    cfg = load_config(CLS_CFG, ["MODEL.WEIGHTS", name])
    task = get_task(cfg.TASK)
    model = task.build_model(cfg)
    report = load_model_weights(cfg, model, cfg.MODEL.WEIGHTS, task)

    own = model.state_dict()
    learned = [k for k in state if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(report.loaded) == len(learned) == 62
    for key in learned:  # every tensor, value by value (the model prefixes ResNet keys with "resnet.")
        assert torch.equal(own["resnet." + key], state[key]), key

    source = wu.weights_source(name)
    assert source.url == server.url + "detectron/ImageNetPretrained/47261647/R-50-GN.pkl"
    converted = read_checkpoint(source.converted_path)
    assert converted.meta["source_format"] == "caffe2" and converted.meta["norm"] == "GN"
    assert converted.meta["stride_in_1x1"] is False and "ModelCatalog" in converted.meta["stride_source"]
    assert converted.meta["input"]["format"] == "BGR" and converted.meta["source_url"] == source.url
    # once: a second resolution reads the cache, no new request
    assert wu.resolve_weights(name) == source.converted_path
    assert server.hits == {"/detectron/ImageNetPretrained/47261647/R-50-GN.pkl": 1}
    cache = tmp_path / "cache" / "weights"
    assert _files_under(cache) == [f"127.0.0.1_{server.httpd.server_port}/detectron/ImageNetPretrained/47261647/R-50-GN.pkl",
                                   f"converted/127.0.0.1_{server.httpd.server_port}/detectron/ImageNetPretrained/47261647/R-50-GN.pth"]


def test_msra_catalog_model_records_the_stride_on_the_1x1(server):
    state = _few(_r18_state(1))
    blobs = {}
    for key, value in state.items():
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            blobs[convert_name(key, "torchvision", "caffe2", caffe2_norm="bn")] = value.numpy()
    server.files["/detectron/ImageNetPretrained/MSRA/R-50.pkl"] = pickle.dumps(blobs, protocol=2)
    ckpt = read_checkpoint(wu.resolve_weights("catalog://ImageNetPretrained/MSRA/R-50"))
    assert ckpt.meta["stride_in_1x1"] is True and "1x1 (MSRA model)" in ckpt.meta["stride_source"]
    assert ckpt.meta["norm"] == "FrozenBN" and ckpt.meta["input"]["format"] == "BGR"
    assert torch.equal(ckpt.state_dict["layer3.1.bn2.weight"], state["layer3.1.bn2.weight"])
    assert torch.equal(ckpt.state_dict["conv1.weight"], state["conv1.weight"])


def test_unknown_catalog_name_lists_the_known_ones():
    with pytest.raises(wu.CheckpointError, match=r"not in detectron2's model catalog; known names: "
                                                  r"catalog://ImageNetPretrained/MSRA/R-50, "):
        wu.weights_source("catalog://ImageNetPretrained/FAIR/R-51-GN")


def test_detectron2_zoo_http_and_file_urls(server, tmp_path):
    state = _few(_r18_state(2))
    payload = _torch_bytes(state)
    server.files["/detectron2/ImageNetPretrained/torchvision/R-18.pth"] = payload
    server.files["/plain/r18.pth"] = payload
    d2 = wu.resolve_weights("detectron2://ImageNetPretrained/torchvision/R-18.pth?dl=1")
    assert d2.name == "R-18.pth" and d2.read_bytes() == payload  # the query is not part of the name
    plain = wu.resolve_weights(server.url + "plain/r18.pth")
    assert plain.read_bytes() == payload and plain != d2

    local = tmp_path / "my weights" / "r18.pth"
    local.parent.mkdir()
    local.write_bytes(payload)
    from_file = wu.resolve_weights(local.as_uri())
    assert from_file.read_bytes() == payload and from_file.is_relative_to(tmp_path / "cache" / "weights")
    ckpt = read_checkpoint(from_file)
    assert set(ckpt.state_dict) == set(_FEW)
    for key in _FEW:
        assert torch.equal(ckpt.state_dict[key], state[key])


def test_torchvision_names_give_the_published_url_and_hash():
    v1 = wu.weights_source("torchvision://resnet50")
    assert v1.url.endswith("/resnet50-0676ba61.pth") and v1.sha256 == "0676ba61"
    v2 = wu.weights_source("torchvision://ResNet50_Weights.IMAGENET1K_V2")
    assert v2.url.endswith("/resnet50-11ad3fa6.pth") and v2.sha256 == "11ad3fa6"
    assert wu.weights_source("torchvision://resnet18").sha256 == "f37072fd"
    for bad in ("torchvision://resnet51", "torchvision://ResNet50_Weights.IMAGENET9K"):
        with pytest.raises(wu.CheckpointError, match="torchvision has no such weights"):
            wu.weights_source(bad)


def test_checksum_mismatch_is_refused_and_nothing_is_kept(server, tmp_path):
    payload = _torch_bytes(_few(_r18_state(3)))
    server.files["/models/resnet18-f37072fd.pth"] = payload  # not the published file
    with pytest.raises(wu.CheckpointError, match=r"SHA-256 [0-9a-f]{8}\.\.\. differs from the published f37072fd"):
        wu.resolve_weights("torchvision://resnet18")
    assert _files_under(tmp_path / "cache") == []

    server.files["/plain/w.pth"] = payload
    digest = hashlib.sha256(payload).hexdigest()
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(wu.CheckpointError, match="differs from the published"):
        wu.resolve_weights(f"{server.url}plain/w.pth#sha256={wrong}")
    assert _files_under(tmp_path / "cache") == []
    assert wu.resolve_weights(f"{server.url}plain/w.pth#sha256={digest}").read_bytes() == payload


def test_a_partial_download_is_never_kept_nor_reused(server, tmp_path):
    payload = _torch_bytes(_few(_r18_state(4)))
    server.files["/plain/r18.pth"] = payload
    server.truncate.add("/plain/r18.pth")
    url = server.url + "plain/r18.pth"
    with pytest.raises(wu.WeightsUnavailableError, match=rf"the download ended after {len(payload)} of "
                                                          rf"{len(payload) + 1000} bytes"):
        wu.resolve_weights(url)
    assert _files_under(tmp_path / "cache") == []
    # a run killed mid-download left its temporary file: the next run downloads afresh
    target = wu.weights_source(url).cache_path
    target.parent.mkdir(parents=True, exist_ok=True)
    (target.parent / f".{target.name}.deadbeef.tmp").write_bytes(payload[:100])
    server.truncate.clear()
    assert wu.resolve_weights(url).read_bytes() == payload
    assert server.hits["/plain/r18.pth"] == 2


def test_offline_names_the_url_and_the_cache_path_and_clis_exit_2(server, tmp_path, monkeypatch, capsys):
    name = "catalog://ImageNetPretrained/FAIR/R-50-GN"
    source = wu.weights_source(name)
    monkeypatch.setenv(wu.OFFLINE_ENV, "1")
    with pytest.raises(wu.WeightsUnavailableError) as info:
        wu.resolve_weights(name)
    message = str(info.value)
    assert "\n" not in message and source.url in message and f"place it at {source.cache_path}" in message
    assert describe_failure(info.value) == (2, message)  # gn-det-train: one line, exit 2
    assert server.hits == {}

    assert convert_main([name, "--norm", "gn"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"gn-det-convert: error: {message}"
    # no connection at all (nothing listens there) reads the same way
    monkeypatch.delenv(wu.OFFLINE_ENV)
    server.close()
    with pytest.raises(wu.WeightsUnavailableError, match=rf"cannot download .*place it at {source.cache_path}"):
        wu.resolve_weights(name)

    # placed by hand at the named path: used without any download
    source.cache_path.parent.mkdir(parents=True)
    source.cache_path.write_bytes(_caffe2_gn_blobs(_few(_r18_state(5))))
    assert read_checkpoint(wu.resolve_weights(name)).meta["norm"] == "GN"


def test_converter_takes_a_name_and_writes_into_the_current_folder(server, tmp_path, monkeypatch, capsys):
    state = _r18_state(6, num_classes=1000)
    server.files["/models/r18.pth"] = _torch_bytes(state)
    monkeypatch.chdir(tmp_path)
    assert convert_main([server.url + "models/r18.pth", "--norm", "gn"]) == 0
    out = tmp_path / "r18_gn.pth"
    assert out.is_file() and (tmp_path / "r18_gn.pth.report.json").is_file()
    ckpt = read_checkpoint(out)
    assert torch.equal(ckpt.state_dict["layer1.1.conv2.weight"], state["layer1.1.conv2.weight"])
    assert torch.equal(ckpt.state_dict["layer1.1.bn2.weight"], state["layer1.1.bn2.weight"])
