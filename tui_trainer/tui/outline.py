"""The editor's sections in the order the wizard walks them (DESIGN.md): ids and sidebar titles.

A plain table with no imports, so the first frame can list the sections before the editor is loaded.
"""

SECTION_TITLES: dict[str, str] = {
    "model": "Model & method",
    "workspace": "Workspace",
    "concepts": "Concepts",
    "samples": "Samples",
    "backup": "Backup & save",
    "training": "Training",
    "optimizer": "Optimizer",
    "scheduler": "Scheduler & LR",
    "method": "Method",
    "distributed": "Distributed",
    "review": "Review",
}
"""Section id -> sidebar title, in wizard order (a pane may make its title more specific, e.g. 'LoRA')."""
