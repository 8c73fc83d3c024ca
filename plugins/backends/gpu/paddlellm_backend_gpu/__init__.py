"""The CUDA GPU backend of paddlellm (brings paddlepaddle-gpu)."""
