"""The cut: a plan of kept indices per tensor dimension, the soft (masked, same-shape) model and
the hard (channels removed) model, both from the same plan."""
