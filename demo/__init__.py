"""``make demo``: the reconciliation lane end to end on embedded defaults (see __main__)."""
