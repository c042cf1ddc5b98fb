"""Fine-tuning recipes for ``python -m jaxcl.finetune --config=configs/finetune/<name>.py``.

Not training recipes (``jaxcl.configs.NAMES`` lists only the files one folder up):
each ``get_config(arg)`` returns a `jaxcl.finetuning.default_finetune_config` recipe.
"""
