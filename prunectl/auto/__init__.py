"""Automatic per-layer rates: CAC's accuracy-controlled search and NetAdapt's target mode.

Use ``prunectl.auto.search.auto(checkpoint, prunectl.options.AutoOptions(task="digits", ...))``;
see docs/auto.md.
"""
