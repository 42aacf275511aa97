"""Tokens and tensors: loading DiffusionGemma checkpoints, the canvas, the denoising sampler, training.

Imported as ``dgls.model``; knows nothing about LSP, documents or editors.
"""

DEFAULT_MODEL = "dgls-tiny"  # the embedded model served when no other is named
EXPERTS = ("auto", "fp8")  # how a MoE checkpoint's experts run: dgls.model.loading.load_model(experts=...)
