"""predrecon.eval.suites: The suite registry and ``evaluate`` (``registry``), the paper suite (``runner`` + ``groups``)
and the exploratory suites (``extras``, ``robustness``).
"""
