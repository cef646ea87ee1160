"""train_net's command line: flags, overrides, outputs, --resume, --eval-only and user errors."""

import os

import pytest
import torch

from engine_toy_task import toy_opts
from gn_det.cli.train_net import build_parser, main

torch.set_num_threads(1)


def _run_expect_exit(argv, capsys, code=2):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_parser_detectron2_flags_and_remainder():
    args = build_parser().parse_args(["--config-file", "a.yaml", "--num-gpus", "8", "--num-machines", "2",
                                      "--machine-rank", "1", "--dist-url", "tcp://10.0.0.1:1234", "--resume",
                                      "--eval-only", "SOLVER.BASE_LR", "0.01", "MODEL.WEIGHTS", "w.pth"])
    assert (args.config_file, args.num_gpus, args.num_machines, args.machine_rank) == ("a.yaml", 8, 2, 1)
    assert args.dist_url == "tcp://10.0.0.1:1234" and args.resume and args.eval_only
    assert args.opts == ["SOLVER.BASE_LR", "0.01", "MODEL.WEIGHTS", "w.pth"]
    defaults = build_parser().parse_args([])
    assert (defaults.num_gpus, defaults.dist_url, defaults.resume, defaults.opts) == (1, "auto", False, [])


def test_user_errors_exit_2_with_one_clear_message(tmp_path, capsys):
    err = _run_expect_exit(["--config-file", str(tmp_path / "missing.yaml")], capsys)
    assert "Config file not found" in err and "missing.yaml" in err
    err = _run_expect_exit(["SOLVER.BASE_RL", "0.1"], capsys)
    assert "Unknown config key 'SOLVER.BASE_RL'" in err and "Did you mean 'SOLVER.BASE_LR'" in err
    err = _run_expect_exit(["TASK", "no_such_task"], capsys)
    assert "Unknown TASK 'no_such_task'" in err
    err = _run_expect_exit(["--num-gpus", "4"] + toy_opts(str(tmp_path / "x"), **{"SOLVER.IMS_PER_BATCH": 6}),
                           capsys)
    assert "SOLVER.IMS_PER_BATCH (6)" in err and "world size (4)" in err
    err = _run_expect_exit(["--num-gpus", "0"], capsys)
    assert "--num-gpus must be >= 1" in err
    err = _run_expect_exit(["--num-machines", "2", "--machine-rank", "1"], capsys)
    assert "--dist-url" in err
    err = _run_expect_exit(["--eval-only"] + toy_opts(str(tmp_path / "noweights")), capsys)
    assert "--eval-only needs weights" in err


def test_train_resume_and_eval_only(tmp_path, capsys):
    out = tmp_path / "run"
    cfg_file = tmp_path / "toy.yaml"
    cfg_file.write_text("SOLVER:\n  MAX_ITER: 4\n  CHECKPOINT_PERIOD: 2\n")
    opts = toy_opts(str(out), exclude=("SOLVER.MAX_ITER", "SOLVER.CHECKPOINT_PERIOD"))
    assert main(["--config-file", str(cfg_file)] + opts) == 0  # file, then overrides
    files = set(os.listdir(out))
    assert {"config.yaml", "metrics.json", "log.txt", "last_checkpoint", "model_0000001.pth",
            "model_final.pth"} <= files
    assert any(f.startswith("events.out.tfevents") for f in files)
    assert "MAX_ITER: 4" in (out / "config.yaml").read_text()
    log = (out / "log.txt").read_text()
    assert "iter: 4/4" in log and "lr: 0.1" in log and "eta:" in log and "cls  |" in log

    # --resume after the end: nothing left to train, the final model is evaluated again
    assert main(["--resume"] + toy_opts(str(out), **{"SOLVER.MAX_ITER": 4})) == 0
    assert "Resuming from" in (out / "log.txt").read_text()

    # --eval-only --resume evaluates the last checkpoint of OUTPUT_DIR
    assert main(["--eval-only", "--resume"] + toy_opts(str(out))) == 0
    assert (out / "log.txt").read_text().count("Loaded 8 of 8 model tensors from") == 2

    eval_dir = tmp_path / "eval"
    assert main(["--eval-only"] + toy_opts(str(eval_dir), **{"MODEL.WEIGHTS": str(out / "model_final.pth")})) == 0
    log = (eval_dir / "log.txt").read_text()
    assert "Loaded" in log and "Evaluation results for toy_test" in log
    assert not (eval_dir / "metrics.json").exists()  # no training happened
    capsys.readouterr()
    err = _run_expect_exit(["--eval-only"] + toy_opts(str(eval_dir), **{"MODEL.WEIGHTS": str(tmp_path / "no.pth")}),
                           capsys)
    assert "no.pth" in err


def test_resume_from_a_checkpoint_that_does_not_fit_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": {"other.weight": torch.ones(3)}, "iteration": 5}, out / "model_0000005.pth")
    (out / "last_checkpoint").write_text("model_0000005.pth")
    err = _run_expect_exit(["--resume"] + toy_opts(str(out)), capsys)
    assert "model_0000005.pth does not fit this model" in err and "matched 0 of 8" in err
    assert "8 model keys missing from the file (conv1.weight" in err and "other.weight" in err
    assert "Traceback" not in err
    assert not (out / "metrics.json").exists()  # never trained on
    # a plain state dict is not a training checkpoint
    torch.save({"conv1.weight": torch.ones(8, 3, 3, 3)}, out / "model_0000005.pth")
    err = _run_expect_exit(["--resume"] + toy_opts(str(out)), capsys)
    assert "is not a gn_det training checkpoint" in err and "MODEL.WEIGHTS" in err


def test_non_finite_loss_exits_3_without_traceback(tmp_path, capsys):
    # 3: training failed (distinct from 2, user errors, and 1, unexpected errors)
    err = _run_expect_exit(toy_opts(str(tmp_path / "nan"), TASK="engine_toy_task:PoisonedToyTask"), capsys, code=3)
    assert "non-finite at iteration 1" in err
