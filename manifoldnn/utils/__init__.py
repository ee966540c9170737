"""Small helpers that are not geometry: the process's threading (``threads``).

Nothing here imports torch at module level, so that ``threads`` can run before torch is loaded.
"""
