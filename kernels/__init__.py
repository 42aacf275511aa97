"""Triton kernels with their pure-torch references. Imported as ``dgls.kernels``; knows only tensors."""
