"""The built-in training stages, each a short recipe on :class:`~paddlellm.training.TrainingSession`
(registered by :mod:`paddlellm.plugin.builtin` through ``register_stages``, like a plugin's)."""
