"""Tokens and tensors: loading DiffusionGemma checkpoints, the canvas, the denoising sampler, training.

Imported as ``dgls.model``; knows nothing about LSP, documents or editors.
"""
