"""User-facing workflows: the ``Segmenter`` API, batch segmentation to files, bundle lookup."""

from medseg.workflows.batch import CaseOutcome, collect_cases, safe_case_name, segment_files, write_result
from medseg.workflows.bundles import bundle_parser, bundle_path, list_bundles
from medseg.workflows.checkpoint import load_weights
from medseg.workflows.segmenter import SegmentationResult, Segmenter

__all__ = [
    "CaseOutcome",
    "SegmentationResult",
    "Segmenter",
    "bundle_parser",
    "bundle_path",
    "collect_cases",
    "list_bundles",
    "load_weights",
    "safe_case_name",
    "segment_files",
    "write_result",
]
