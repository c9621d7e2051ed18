"""predrecon.eval.report: Reading and comparing every suite's records (``report.compare``), the exploratory tables
(``extras_report``) and figures (``plots``).
"""
