"""safethink.guard"""
