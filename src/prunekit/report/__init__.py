"""Rendering only: Markdown tables (:mod:`.tables`), figures (:mod:`.plots`) and the HTML/Markdown run report
(:mod:`.html`). The numbers come from :mod:`prunekit.analysis`, training and pruning; nothing here prunes,
trains or evaluates."""
