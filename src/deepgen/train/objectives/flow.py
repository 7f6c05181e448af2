"""Flow matching on the curated pairs and edits (alignment and SFT)."""

from __future__ import annotations

from deepgen.train.batches import batches, sample_stream
from deepgen.train.objectives.base import Objective, register


@register("flow")
class FlowObjective(Objective):
    previews = True

    def batches(self):
        return batches(sample_stream(self.context.data["train"], seed=self.context.seed, keep=self.stage.keep),
                       self.stage.batch_size)

    def forward(self, batch: dict):
        model = self.model
        loss = model.flow_loss(batch["images"].to(model.device), batch["captions"], batch["refs"],
                               batch["ref_images"].to(model.device))
        return loss, {}
