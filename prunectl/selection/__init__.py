"""Selection: score channel groups with a criterion and choose what each keeps (per layer, global
ranking, a MACs/params budget, in steps), or the single weights to zero (unstructured)."""
