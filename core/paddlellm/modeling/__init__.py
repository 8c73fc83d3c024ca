"""Modeling: ``AutoModelForCausalLM`` (:mod:`.auto`), a run's model (:mod:`.prepare`:
built or loaded, prepared for training, saved; the bundled demo models), the PEFT front
door (:mod:`.peft`), ``generate`` (:mod:`.generation`), the attention and linear kernel
seams, KV-cache layouts and the paged pool (:mod:`.kv_cache`, :mod:`.kv_layout`,
:mod:`.kv_manager`) and evaluation helpers.

Importing this package imports none of its modules (and no Paddle).
"""
