"""The run directory: the only contract between the TUI and the trainer. Imports neither torch nor textual."""
