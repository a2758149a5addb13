"""Screens of the TUI: the start page, the section editor (also the wizard), its section panes and dialogs."""
