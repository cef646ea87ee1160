"""Config: fvcore CfgNode with detectron2's key names (see defaults.py)."""
