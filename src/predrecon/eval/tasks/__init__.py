"""predrecon.eval.tasks: The task registry (``registry``) and its loaders: GLUE TSVs (``glue``), shipped sets
(``builtin``), user files (``userfile``).
"""
