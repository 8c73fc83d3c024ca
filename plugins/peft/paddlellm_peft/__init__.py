"""PEFT methods (LoRA and variants, prefix tuning, LoKr, VeRA) for paddlellm."""
