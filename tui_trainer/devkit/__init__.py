"""Builders of tiny real-architecture models and synthetic datasets for tests and the demo."""
