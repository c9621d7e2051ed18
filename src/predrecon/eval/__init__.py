"""predrecon.eval"""
