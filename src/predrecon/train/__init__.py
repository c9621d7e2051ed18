"""predrecon.train"""
