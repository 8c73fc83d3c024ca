"""LoRA and its variants (rsLoRA, LoRA+, PiSSA, DoRA, MoSLoRA): ``--peft lora``.

Registered lazily: listing plugins imports neither Paddle nor the layer code.
"""
from paddlellm.api import hookimpl


@hookimpl
def register_peft_methods(register):
    register("lora", "paddlellm_peft.lora.method:LORA",
             options="paddlellm_peft.lora.config:LoraConfig",
             description="LoRA (+ rsLoRA, LoRA+, PiSSA, DoRA, MoSLoRA switches); peft format")
