"""Writers for each output format; each validates what it wrote."""
