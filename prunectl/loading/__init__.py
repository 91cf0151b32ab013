"""Loading: checkpoint + spec + options -> model and inputs; bundles read back; meta-device
builds; the memory guard that refuses a run before it allocates too much."""
