"""dgls: a code-infill language server on a text-diffusion model."""

__version__ = "0.1.0"
