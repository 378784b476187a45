"""jukejax: OpenAI Jukebox in JAX/Flax."""
