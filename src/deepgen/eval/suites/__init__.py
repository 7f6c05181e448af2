"""Evaluation suites behind one interface (deepgen.eval.suites.base): ShapesBench (`shapes`, the pipeline's own
evaluation, keys flat), GenEval, DPG-Bench, WISE, T2I-CoReBench, UniGenBench, the OCR prompts and edits on your own
images; chosen per Kedro environment in `suites:` (conf/<env>/parameters_evaluation.yml)."""

from deepgen.eval.suites.base import SUITES, NotScored, Prompt, Suite, SuiteSettings, build_suite, register
from deepgen.eval.suites import (  # noqa: F401  (registers the suites)
    dpg_bench, edit, geneval, ocr, shapes, t2i_corebench, unigenbench, wise)
from deepgen.eval.suites.evaluate import SuiteContext, SuitePlan, evaluate_state, evaluate_states
from deepgen.eval.suites.report import log_report
from deepgen.eval.suites.runner import Outcome, Workers, run_suite, run_suites

__all__ = ["SUITES", "NotScored", "Outcome", "Prompt", "Suite", "SuiteContext", "SuitePlan", "SuiteSettings",
           "Workers", "build_suite", "evaluate_state", "evaluate_states", "log_report", "register", "run_suite",
           "run_suites"]
