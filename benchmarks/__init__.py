"""Benchmarks of the Telnyx TTS plugin against the local emulator (issue #5).

Run them all with ``python -m benchmarks.run`` from the repository root (``--quick`` for a short
run); see ``benchmarks/README.md`` for what is measured and how.
"""
