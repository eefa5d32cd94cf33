"""Site-level orchestration: pre-training, fine-tuning and evaluation runs that read a site and write outputs.

Unlike :mod:`endofed.ssl` and :mod:`endofed.finetune` (pure loops), these modules do I/O: they run the data
check, build loaders over the site's cache, write checkpoints, metrics and predictions into an output folder.
"""
