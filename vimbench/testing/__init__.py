"""Helpers the test suite shares (tests never import each other): synthetic results rows and run folders,
a recording executor, and the numerics of kernel checks. Like torch.testing, shipped with the package so
that `pytest -q` works from any clone; nothing in vimbench imports it.
"""
