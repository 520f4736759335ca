"""safethink.judges"""
