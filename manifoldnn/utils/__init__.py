"""Small helpers that are not geometry: the process's threading (``threads``) and evaluation
metrics of paired representations (``metrics``: retrieval recall, read-back, token recovery).

This ``__init__`` imports no submodule, so that ``threads`` can run before torch is loaded.
"""
