"""Tasks: each wires a model builder, data loaders and an evaluator for the engine.

- :mod:`~gn_det.tasks.detection`: Mask R-CNN on COCO-format data, COCO box/mask AP (``TASK detection``).
- :mod:`~gn_det.tasks.classification`: ResNet image classification on ImageNet-layout folders,
  top-1/top-5 (``TASK classification``).
- :mod:`~gn_det.tasks.video`: I3D 3D-conv video classification (Kinetics-style lists, 2D checkpoints
  inflated to 3D), clip- and video-level top-1/top-5 (``TASK video``).

A task registers itself (:func:`gn_det.engine.task.register_task`) when its module is imported
and declares its config keys in ``add_config``. The engine finds tasks through the
``gn_det.tasks`` entry points (``pyproject.toml``), so it names none of these modules; importing
this package registers every built-in task at once, and the installed plugins' tasks too.
"""

from importlib import import_module

from ..utils.plugins import TASK_GROUP, entry_point_names, load_entry_point

BUILTIN_TASKS = ("detection", "classification", "video")

for _name in BUILTIN_TASKS:
    import_module(f"{__name__}.{_name}")
for _name in entry_point_names(TASK_GROUP):  # tasks of other installed packages
    if _name not in BUILTIN_TASKS:
        load_entry_point(_name, TASK_GROUP)
