"""Models: one provider per file (``pkg.module:Class``, ``torchvision:``, ``timm:``, ``hf:``), the
default inputs a model is traced and checked on, and running a model on them."""
