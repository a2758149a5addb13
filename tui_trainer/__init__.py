"""tui-trainer: set up, run and watch Stable Diffusion fine-tuning from the terminal."""

__version__ = "0.1.0"
