"""Promote the run's best stage checkpoint: one registered model per preset, the gate decides its alias."""

from __future__ import annotations

import torch

from deepgen.eval.promotion import EvaluationContext, PromotionConfig, promote_best
from deepgen.eval.run import evaluation_settings
from pipelines.hooks import tracking


def register_and_promote(evaluation: dict, curation: dict, promotion: dict, evaluation_params: dict, storage: dict,
                         model: dict, **records: dict) -> dict:
    """records: one stage record per candidate input (alignment, sft, ...); `promotion.candidates` picks among them."""
    torch.set_flush_denormal(True)  # the champion may be re-scored and both models draw the report
    config = PromotionConfig.from_params(promotion, model["preset"])
    context = EvaluationContext(curation["heldout_urls"], evaluation_settings(evaluation_params),
                                storage["evaluation_cache"], tracking())
    return promote_best(records, evaluation, config, context)
