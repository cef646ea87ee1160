"""Config loading: _BASE_ inheritance, overrides, unknown keys and bad values."""

import pytest

from gn_det.config import ConfigError, get_cfg, load_config


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_get_cfg_is_an_independent_copy():
    a = get_cfg()
    a.SOLVER.BASE_LR = 123.0
    assert get_cfg().SOLVER.BASE_LR == 0.02


def test_base_chain_and_overrides_merge_in_order(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "base.yaml", "TASK: detection\nSOLVER:\n  BASE_LR: 0.01\n  STEPS: [10, 20]\nMODEL:\n"
                                   "  RESNETS:\n    NORM: GN\n")
    _write(tmp_path / "other.yaml", "MODEL:\n  FPN:\n    NORM: GN\n  RESNETS:\n    DEPTH: 101\n")
    # _BASE_ paths are relative to the file naming them; a list merges left to right.
    child = _write(tmp_path / "sub" / "child.yaml",
                   "_BASE_: ['../base.yaml', '../other.yaml']\nSOLVER:\n  BASE_LR: 0.005\n")
    cfg = load_config(child, ["SOLVER.MAX_ITER", "300", "MODEL.RESNETS.NORM", "GN+WS"])
    assert cfg.SOLVER.BASE_LR == 0.005  # child beats base
    assert cfg.SOLVER.STEPS == (10, 20)  # list in YAML coerced to the default's tuple
    assert cfg.MODEL.RESNETS.DEPTH == 101 and cfg.MODEL.FPN.NORM == "GN"
    assert cfg.SOLVER.MAX_ITER == 300 and cfg.MODEL.RESNETS.NORM == "GN+WS"  # overrides beat files
    assert cfg.SOLVER.MOMENTUM == 0.9  # untouched default
    assert cfg.is_frozen()
    with pytest.raises(AttributeError):
        cfg.SOLVER.BASE_LR = 1.0


def test_single_base_string_and_int_for_float(tmp_path):
    _write(tmp_path / "base.yaml", "TASK: detection\nSOLVER:\n  BASE_LR: 1\n")  # YAML int for a float default
    child = _write(tmp_path / "child.yaml", "_BASE_: base.yaml\nSOLVER:\n  MOMENTUM: 0\n")
    cfg = load_config(child, ["SOLVER.GAMMA", "1"])
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.SOLVER.MOMENTUM == 0.0 and isinstance(cfg.SOLVER.GAMMA, float)


def test_unknown_key_in_file_names_key_and_suggests(tmp_path):
    base = _write(tmp_path / "base.yaml", "SOLVER:\n  BASE_LRR: 0.01\n")
    child = _write(tmp_path / "child.yaml", "_BASE_: base.yaml\n")
    with pytest.raises(ConfigError) as e:
        load_config(child)
    msg = str(e.value)
    assert "'SOLVER.BASE_LRR'" in msg and "Did you mean 'SOLVER.BASE_LR'" in msg and "child.yaml" in msg
    del base


def test_unknown_override_suggests_closest_and_wrong_section():
    with pytest.raises(ConfigError, match=r"'SOLVER.IMS_PER_BACH'.*Did you mean 'SOLVER.IMS_PER_BATCH'"):
        load_config(None, ["SOLVER.IMS_PER_BACH", "8"])
    # the right leaf in the wrong section still finds the key
    with pytest.raises(ConfigError, match=r"'MODEL.WEIGHT_DECAY_NORM'.*'SOLVER.WEIGHT_DECAY_NORM'"):
        load_config(None, ["MODEL.WEIGHT_DECAY_NORM", "0"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(None, ["MODEL.WEIGHTS.X", "1"])


def test_bad_value_type_is_clear(tmp_path):
    with pytest.raises(ConfigError, match=r"SOLVER.MAX_ITER.*'many'.*expected a int.*90000"):
        load_config(None, ["SOLVER.MAX_ITER", "many"])
    f = _write(tmp_path / "bad.yaml", "MODEL:\n  RESNETS:\n    NORM: [GN]\n")
    with pytest.raises(ConfigError, match=r"MODEL.RESNETS.NORM.*bad.yaml.*expected a str"):
        load_config(f)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="Config file not found: .*nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))
    child = _write(tmp_path / "child.yaml", "_BASE_: missing_base.yaml\n")
    with pytest.raises(ConfigError, match="_BASE_.*missing_base.yaml"):
        load_config(child)
    broken = _write(tmp_path / "broken.yaml", "SOLVER: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="odd number.*'SOLVER.BASE_LR' has no value"):
        load_config(None, ["SOLVER.BASE_LR"])


def test_detectron2_tuple_style_values_in_yaml(tmp_path):
    # detectron2's configs write tuples as strings: TRAIN: ("coco_2017_train",)
    path = _write(tmp_path / "d2.yaml", 'TASK: detection\nDATASETS:\n  TRAIN: ("a_train", "b_train")\n'
                                         '  TEST: ("a_val",)\n'
                                         "INPUT:\n  MIN_SIZE_TRAIN: (640, 672, 704)\n")
    cfg = load_config(path)
    assert cfg.DATASETS.TRAIN == ("a_train", "b_train") and cfg.DATASETS.TEST == ("a_val",)
    assert cfg.INPUT.MIN_SIZE_TRAIN == (640, 672, 704)


# ------------------------------------------------------------------ per-task keys


class _PluginTask:
    """A task of an outside package, named by 'module:Class', declaring one key of its own."""

    @staticmethod
    def add_config(cfg):
        from gn_det.config import CfgNode

        cfg.PLUGIN = CfgNode()
        cfg.PLUGIN.DEPTH = 3


def test_each_task_adds_its_own_keys_before_the_merge(tmp_path):
    det = get_cfg("detection")
    assert det.TASK == "detection" and det.MODEL.ROI_HEADS.NUM_CLASSES == 80
    assert det.MODEL.META_ARCHITECTURE == "GeneralizedRCNN" and det.MODEL.BACKBONE.NAME == "build_resnet_fpn_backbone"
    assert get_cfg().TASK == "detection"  # the default task, detectron2's configs need no TASK key
    plugin = f"{__name__}:_PluginTask"
    cfg = load_config(_write(tmp_path / "p.yaml", f"TASK: '{plugin}'\nPLUGIN:\n  DEPTH: 5\n"))
    assert cfg.PLUGIN.DEPTH == 5 and "ROI_HEADS" not in cfg.MODEL  # detection keys stay out
    # TASK given on the command line is read first too, so the task's keys merge from the file
    base = _write(tmp_path / "b.yaml", "PLUGIN:\n  DEPTH: 7\n")
    assert load_config(base, ["TASK", plugin]).PLUGIN.DEPTH == 7
    with pytest.raises(ConfigError, match=r"'PLUGIN.DEPTH'.*It is a key of TASK '.*_PluginTask'.*TASK is 'detection'"):
        load_config(base)


def test_a_key_of_another_task_names_its_task():
    with pytest.raises(ConfigError, match=r"'MODEL.ROI_HEADS.NUM_CLASSES'.*key of TASK 'detection'.*TASK is "
                                          r"'classification'"):
        load_config(None, ["TASK", "classification", "MODEL.ROI_HEADS.NUM_CLASSES", "3"])


def test_unknown_task_and_old_version_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown TASK 'no_such'.*'detection'"):
        load_config(None, ["TASK", "no_such"])
    old = _write(tmp_path / "v1.yaml", "VERSION: 1\n")
    with pytest.raises(ConfigError, match="VERSION 1: only detectron2's config VERSION 2"):
        load_config(old)
