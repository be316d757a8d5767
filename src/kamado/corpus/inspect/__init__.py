"""Looking at a clean result: kept and rejected samples per reason (``samples``), and how a chain's filters fall
on labelled paragraphs (``labelled``)."""
