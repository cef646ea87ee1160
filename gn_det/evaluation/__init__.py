"""Evaluators (COCO box/mask AP) and metric tables."""

from .coco_evaluation import COCOEvaluator, COCODatasetInfo, instances_to_coco_results
from ..utils.table import format_metrics_table, format_per_class_table, format_table

__all__ = ["COCOEvaluator", "COCODatasetInfo", "instances_to_coco_results", "format_table",
           "format_metrics_table", "format_per_class_table"]
