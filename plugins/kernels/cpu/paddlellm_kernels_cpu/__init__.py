"""Compiled CPU kernels for paddlellm (paged attention, weight-only int8/int4 matmul).

Built from ``csrc/`` on first use and cached (see :mod:`.build`); when the build is not
possible the kernels decline every call and the reference paths run.
"""
