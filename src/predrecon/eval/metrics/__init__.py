"""predrecon.eval.metrics: Metrics as pure functions of arrays (geometry, lexical, probes, scores, fewshot) and the
statistics they use (``stats``).
"""
