"""prunectl plugin: the digits task, two small digit models and the ``linf`` criterion."""
__version__ = "0.1.0"
