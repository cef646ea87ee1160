"""Test-wide settings: never touch the user's dataset cache or dataset folders."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_gn_det_cache(tmp_path_factory):
    # Synthetic sets made during the tests go to a throwaway folder, not ~/.cache/gn_det.
    mp = pytest.MonkeyPatch()
    mp.setenv("GN_DET_CACHE", str(tmp_path_factory.mktemp("gn_det_cache")))
    mp.setenv("GN_DET_DATASETS", str(tmp_path_factory.mktemp("gn_det_datasets")))
    yield
    mp.undo()
