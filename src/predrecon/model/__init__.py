"""predrecon.model"""
