"""One module per family: config adapter, weight-name map, presets (all Paddle-free)."""

#: family name -> "module:attribute" of its :class:`~paddlellm_models.families.base.Family`
FAMILIES = {
    "llama": "paddlellm_models.families.llama:family",
    "qwen2": "paddlellm_models.families.qwen2:family",
    "qwen2_moe": "paddlellm_models.families.qwen2_moe:family",
    "qwen3": "paddlellm_models.families.qwen3:family",
    "qwen3_moe": "paddlellm_models.families.qwen3_moe:family",
    "mistral": "paddlellm_models.families.mistral:family",
    "mixtral": "paddlellm_models.families.mixtral:family",
    "gemma": "paddlellm_models.families.gemma:family",
    "gemma2": "paddlellm_models.families.gemma2:family",
    "phi3": "paddlellm_models.families.phi3:family",
    "gpt2": "paddlellm_models.families.gpt2:family",
    "opt": "paddlellm_models.families.opt:family",
    "bloom": "paddlellm_models.families.bloom:family",
    "chatglm": "paddlellm_models.families.chatglm:family",
    "chatglm2": "paddlellm_models.families.chatglm2:family",
    "baichuan": "paddlellm_models.families.baichuan:family",
    "yuan": "paddlellm_models.families.yuan:family",
}
