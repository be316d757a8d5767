"""kamado: raw Japanese/English web text to an evaluated, instruction-tuned LLaMA-style model."""

__version__ = "0.1.0"
