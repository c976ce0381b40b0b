"""User-facing workflows: the ``Segmenter`` and ``Translator`` predictors, batch segmentation to files, bundle lookup."""

from medseg.workflows.batch import collect_cases, safe_case_name, segment_files
from medseg.workflows.bundles import bundle_parser, bundle_path, config_files, list_bundles
from medseg.workflows.case_outputs import CaseOutcome, write_result
from medseg.workflows.predictor import Predictor, resolve_device
from medseg.workflows.result import SegmentationResult
from medseg.workflows.run_bundle import RunBundle
from medseg.workflows.segmenter import Segmenter
from medseg.workflows.translator import TranslationOutput, Translator

__all__ = [
    "CaseOutcome",
    "Predictor",
    "RunBundle",
    "SegmentationResult",
    "Segmenter",
    "TranslationOutput",
    "Translator",
    "bundle_parser",
    "bundle_path",
    "collect_cases",
    "config_files",
    "list_bundles",
    "resolve_device",
    "safe_case_name",
    "segment_files",
    "write_result",
]
