"""The self-contained HTML report of a run (``stage``), its building blocks (``html``) and figures (``plots``)."""
