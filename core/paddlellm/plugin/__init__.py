"""The plugin host: the registry of every kind, entry-point loading and its checks
(:mod:`.manager`), the run configuration (:mod:`.config`, PaddleNLP argument files in
:mod:`.paddlenlp_args`), device parsing, the low-precision policy, ``llm doctor`` and the
core's own plugin (:mod:`.builtin`: default selectors, built-in stages and commands).

Importing this package imports none of its modules.
"""
