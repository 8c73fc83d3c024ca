"""The CPU backend of paddlellm (brings paddlepaddle)."""
