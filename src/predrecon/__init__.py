"""predrecon: hybrid predict (JEPA) + reconstruct (MLM) pre-training of text encoders,
and a harness that measures what the objective does to the representations."""

__version__ = "0.1.0"
