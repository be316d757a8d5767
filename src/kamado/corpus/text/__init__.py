"""Text utilities shared by the steps, dedup and the tokenizer: normalisation (``normalize``) and Japanese
character classes (``ja``)."""
