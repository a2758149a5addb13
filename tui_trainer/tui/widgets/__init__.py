"""Widgets of the TUI: schema-driven fields, record lists and the live VRAM and bucket panels."""
