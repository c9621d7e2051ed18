"""predrecon.eval.encode: Encoders (the TextEncoder interface, checkpoint and HF loading, the random-init floor)
and poolings.
"""
