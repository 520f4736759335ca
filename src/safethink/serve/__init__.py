"""safethink.serve"""
