"""predrecon.data"""
