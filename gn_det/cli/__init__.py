"""gn_det's command-line tools (``gn-det-train``, ``gn-det-convert`` ...; ``tools/*.py`` run the same).

Importing this package sets the CPU thread policy (:mod:`gn_det.utils.threads`: ``OMP_WAIT_POLICY=PASSIVE``
and one share of the usable CPUs per process, unless ``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY`` are set or
``GN_DET_THREAD_POLICY=off``) before any tool imports torch: OpenMP reads it only when torch starts.
The tools import torch and the other heavy packages only where they use them, so that ``--help``
and a config mistake answer at once.
"""

from ..utils.threads import apply_thread_policy

apply_thread_policy()  # gn-det-train divides the cores again once it knows its process count
