"""predrecon.objectives"""
