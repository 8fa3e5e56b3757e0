"""The command-line programs: one module each, `run()` its console entry point (setup.py)."""
