"""Training: fine-tuning a pruned model on a task (one process or torchrun), and ``prunectl finetune``."""
