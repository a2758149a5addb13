"""The trainer process: loads a model, trains it and writes the run directory. Imports torch, never textual."""
