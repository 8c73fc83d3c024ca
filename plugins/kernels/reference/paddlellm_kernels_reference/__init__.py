"""The reference attention kernel of paddlellm: plain Paddle, exact in float32."""
