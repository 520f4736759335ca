"""safethink.eval"""
