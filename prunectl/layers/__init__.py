"""What prunectl knows about torch module kinds (which dims follow the channels, how a module is
resized), and the modules a hard-pruned model gets where torch's own cannot express a cut."""
