"""The Textual app. Imports core and runs, never torch."""
