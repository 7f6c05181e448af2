"""Flow matching on the curated pairs and edits (alignment and SFT)."""

from __future__ import annotations

from deepgen.train.objectives.base import Objective, register


@register("flow")
class FlowObjective(Objective):
    previews = True

    def batches(self):
        return self.stream("train", self.stage.batch_size, self.stage.keep)

    def forward(self, batch: dict):
        model = self.model
        loss = model.flow_loss(batch["images"].to(model.device), batch["captions"], batch["refs"], batch["ref_images"])
        return loss, {}
