"""The steps of a filter chain: base classes and registry (``base``), the chain and its step loop (``chain``),
and the built-in steps: text cleaners (``cleaners``), generic filters (``filters``), HojiChar-style Japanese
rules (``rules``), the learned quality classifier (``quality``) and reference-LM perplexity (``perplexity``)."""
