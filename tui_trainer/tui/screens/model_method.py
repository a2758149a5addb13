"""Model & method: what is trained, from which base model, in which dtypes (per part of the family)."""

from __future__ import annotations

from collections.abc import Iterable

from tui_trainer.config.schema import ModelConfig
from tui_trainer.models.families import spec_for_model
from tui_trainer.tui.outline import SECTION_TITLES
from tui_trainer.tui.screens.section import Group, SectionPane, with_rest


class ModelMethodPane(SectionPane):
    """Method, base model, and weight / compute precision."""

    SECTION = "model"
    TITLE = SECTION_TITLES[SECTION]
    GROUPS = with_rest(ModelConfig, "model", (
        Group("Method", "", ("method",)),
        Group("Base model", "model", ("family", "base_model", "vae", "transformer", "prediction_type",
                                      "zero_terminal_snr", "allow_pickle")),
        Group("Precision", "model", ("vae_dtype", "train_dtype")),
    ))

    def groups(self) -> Iterable[Group]:
        """The fixed groups, then each of the family's parts' weight dtype."""
        yield from self.GROUPS
        model = self.document.config.model
        for part in spec_for_model(model.family, model.base_model).configured_parts:
            yield Group(f"{part.label} weights", f"parts.{part.config_section}", ("dtype",))
        yield Group("Transformer offload (flow families)", "flow.offload")
