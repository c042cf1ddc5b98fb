"""Runnable experiments built on the training loop (``python -m jaxcl.experiments.<name>``)."""
